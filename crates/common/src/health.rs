//! The `healthcheck` probe every service binary offers, so container health
//! checks need no shell or extra tool.

use std::net::SocketAddr;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// True when the gRPC server at `addr` (an unspecified address means loopback)
/// reports SERVING for `service` (`""` for the whole server).
pub async fn probe_grpc(addr: SocketAddr, service: &str) -> bool {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{host}")) else {
        return false;
    };
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3));
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    match client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
    {
        Ok(resp) => resp.into_inner().status == ServingStatus::Serving as i32,
        Err(_) => false,
    }
}
