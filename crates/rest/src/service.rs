//! The gRPC face of the service.

use std::sync::Arc;

use ferrobase_proto::rest::v1::rest_server::Rest;
use ferrobase_proto::{HttpRequest, HttpResponse};
use tonic::{Request, Response, Status};

use crate::api::{ApiError, ApiRequest};
use crate::handler::{State, handle};

/// The `ferrobase.rest.v1.Rest` service.
#[derive(Clone)]
pub struct RestService {
    state: Arc<State>,
}

impl RestService {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Rest for RestService {
    async fn handle(
        &self,
        request: Request<HttpRequest>,
    ) -> Result<Response<HttpResponse>, Status> {
        let req = ApiRequest::from_grpc(request);
        let (method, path, request_id) =
            (req.method.clone(), req.path.clone(), req.request_id.clone());
        let state = self.state.clone();
        // A task of its own: a cancelled call must not abandon a connection mid-transaction.
        let answer = tokio::spawn(async move { handle(&state, &req).await })
            .await
            .unwrap_or_else(|e| ApiError::internal(format!("request task failed: {e}")).response());
        tracing::debug!(%method, %path, %request_id, status = answer.status, "rest request answered");
        Ok(Response::new(answer))
    }
}
