//! A tiny SMTP server for tests: accepts every message and hands it over.
//! It can offer STARTTLS with a self-signed certificate for `localhost`.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_rustls::TlsAcceptor;

/// One received message.
#[derive(Debug, Clone, Default)]
pub struct SmtpMessage {
    pub from: String,
    pub to: String,
    /// The decoded `AUTH PLAIN` credentials, if the client sent any.
    pub auth: Option<String>,
    pub data: String,
    /// Whether the message came over TLS.
    pub tls: bool,
}

pub struct SmtpSink {
    pub port: u16,
    /// PEM of the certificate, to trust in the client (STARTTLS sinks only).
    pub ca_pem: Option<String>,
    received: Mutex<mpsc::UnboundedReceiver<SmtpMessage>>,
}

fn angle(arg: &str) -> String {
    arg.split_once(':')
        .map(|(_, v)| {
            v.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
        .unwrap_or_default()
}

enum Outcome {
    Closed,
    StartTls,
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    msg: &mut SmtpMessage,
    tx: &mpsc::UnboundedSender<SmtpMessage>,
    offer_starttls: bool,
) -> Outcome {
    let mut line = String::new();
    loop {
        line.clear();
        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
            return Outcome::Closed;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if offer_starttls {
                b"250-sink\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"
            } else {
                b"250-sink\r\n250 AUTH PLAIN\r\n"
            }
        } else if upper == "STARTTLS" && offer_starttls {
            let _ = s.write_all(b"220 go ahead\r\n").await;
            let _ = s.flush().await;
            return Outcome::StartTls;
        } else if let Some(token) = cmd.strip_prefix("AUTH PLAIN ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .unwrap_or_default();
            msg.auth = Some(String::from_utf8_lossy(&raw).into_owned());
            b"235 ok\r\n"
        } else if upper.starts_with("MAIL FROM") {
            msg.from = angle(&cmd);
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO") {
            msg.to = angle(&cmd);
            b"250 ok\r\n"
        } else if upper == "DATA" {
            let _ = s.write_all(b"354 go on\r\n").await;
            let _ = s.flush().await;
            let mut data = String::new();
            loop {
                line.clear();
                if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return Outcome::Closed;
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            msg.data = data;
            let _ = tx.send(msg.clone());
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            let _ = s.write_all(b"221 bye\r\n").await;
            let _ = s.flush().await;
            return Outcome::Closed;
        } else {
            b"502 unknown\r\n"
        };
        let _ = s.write_all(reply).await;
        let _ = s.flush().await;
    }
}

impl SmtpSink {
    /// A plain-text sink.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A sink offering STARTTLS with a fresh self-signed certificate for `localhost`.
    pub async fn start_tls() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(starttls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("smtp bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (acceptor, ca_pem) = if starttls {
            let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .unwrap_or_else(|e| panic!("test certificate: {e}"));
            let cert_der = key.cert.der().clone();
            let key_der =
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("tls versions: {e}"))
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key_der)
            .unwrap_or_else(|e| panic!("tls server config: {e}"));
            (
                Some(TlsAcceptor::from(Arc::new(config))),
                Some(key.cert.pem()),
            )
        } else {
            (None, None)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut s = BufReader::new(stream);
                    let mut msg = SmtpMessage::default();
                    let _ = s.write_all(b"220 sink ready\r\n").await;
                    let _ = s.flush().await;
                    let outcome = session(&mut s, &mut msg, &tx, acceptor.is_some()).await;
                    if let (Outcome::StartTls, Some(acceptor)) = (outcome, acceptor) {
                        let Ok(tls) = acceptor.accept(s.into_inner()).await else {
                            return;
                        };
                        msg.tls = true;
                        let mut s = BufReader::new(tls);
                        session(&mut s, &mut msg, &tx, false).await;
                    }
                });
            }
        });
        Self {
            port,
            ca_pem,
            received: Mutex::new(rx),
        }
    }

    /// The next message received (waits up to 10 s).
    pub async fn next(&self) -> SmtpMessage {
        let mut rx = self.received.lock().await;
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no smtp message within 10 s"))
            .unwrap_or_else(|| panic!("smtp sink stopped"))
    }
}
