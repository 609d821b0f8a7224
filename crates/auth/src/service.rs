//! The gRPC face of the service.

use std::sync::Arc;

use ferrobase_common::db::WorkerPools;
use ferrobase_proto::auth::v1::auth_server::Auth;
use ferrobase_proto::auth::v1::{GetVerificationKeysRequest, GetVerificationKeysResponse};
use ferrobase_proto::{HttpRequest, HttpResponse};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::api::ApiRequest;
use crate::config::AuthConfig;
use crate::mailer::Mailer;
use crate::routes;

/// What every request shares.
pub struct State {
    pub config: AuthConfig,
    /// The database pool, split among the serving workers.
    pub pool: WorkerPools,
    /// The public JSON Web Key Set (`{"keys": [...]}`) of the configured
    /// asymmetric keys; `{"keys": []}` with HS256 signing only.
    pub public_jwks: Value,
    pub mailer: Mailer,
}

impl State {
    pub fn new(config: AuthConfig, pool: WorkerPools) -> anyhow::Result<Self> {
        let mailer = Mailer::new(&config)?;
        let public_jwks = config.jwt_keys.public_jwks();
        Ok(Self {
            config,
            pool,
            public_jwks,
            mailer,
        })
    }
}

/// The `ferrobase.auth.v1.Auth` service.
#[derive(Clone)]
pub struct AuthService {
    state: Arc<State>,
}

impl AuthService {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn handle(
        &self,
        request: Request<HttpRequest>,
    ) -> Result<Response<HttpResponse>, Status> {
        let req = ApiRequest::from_grpc(request);
        Ok(Response::new(routes::dispatch(&self.state, &req).await))
    }

    /// The same key set as `GET /.well-known/jwks.json`, for the gateway.
    async fn get_verification_keys(
        &self,
        _request: Request<GetVerificationKeysRequest>,
    ) -> Result<Response<GetVerificationKeysResponse>, Status> {
        Ok(Response::new(GetVerificationKeysResponse {
            jwks_json: self.state.public_jwks.to_string(),
        }))
    }
}
