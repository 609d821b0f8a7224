//! One long-lived gRPC channel per configured service.
//!
//! Channels connect lazily and reconnect by themselves; a connect timeout
//! bounds how long a request waits for a service that is down, and every call
//! carries the caller's context through [`ClientContextLayer`].

use std::time::Duration;

use ferrobase_common::grpc::{ClientContext, ClientContextLayer, MAX_MESSAGE_BYTES};
use ferrobase_proto::auth::v1::auth_client::AuthClient;
use ferrobase_proto::meta::v1::meta_client::MetaClient;
use ferrobase_proto::rest::v1::rest_client::RestClient;
use ferrobase_proto::storage::v1::storage_client::StorageClient;
use tonic::transport::{Channel, Endpoint};
use tower_layer::Layer as _;

use crate::config::UpstreamUrls;

/// A channel that carries the caller's context.
pub type ContextChannel = ClientContext<Channel>;

/// Clients of every configured service.
#[derive(Clone, Default)]
pub struct Upstreams {
    pub auth: Option<AuthClient<ContextChannel>>,
    pub rest: Option<RestClient<ContextChannel>>,
    pub storage: Option<StorageClient<ContextChannel>>,
    pub meta: Option<MetaClient<ContextChannel>>,
}

fn channel(url: &str, connect_timeout: Duration) -> anyhow::Result<ContextChannel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow::anyhow!("invalid service URL {url}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(ClientContextLayer.layer(endpoint.connect_lazy()))
}

impl Upstreams {
    /// Clients for every URL in `urls`; nothing connects until first use.
    pub fn new(urls: &UpstreamUrls, connect_timeout: Duration) -> anyhow::Result<Self> {
        let mk = |url: &Option<String>| {
            url.as_deref()
                .map(|u| channel(u, connect_timeout))
                .transpose()
        };
        Ok(Self {
            auth: mk(&urls.auth)?.map(|c| {
                AuthClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
            rest: mk(&urls.rest)?.map(|c| {
                RestClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
            storage: mk(&urls.storage)?.map(|c| {
                StorageClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
            meta: mk(&urls.meta)?.map(|c| {
                MetaClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
        })
    }
}
