//! Sending mail: an SMTP relay (implicit TLS or STARTTLS) in production and a development outbox (one
//! JSON file per mail in a directory) that tests and developers read links
//! and codes from. Both may be on at once.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde::Serialize;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{AuthConfig, SmtpConfig, SmtpTls};

const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// One mail, with the parts a template fills in.
#[derive(Debug, Clone, Serialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// `signup`, `invite`, `magiclink`, `recovery`, `email_change`, `reauthentication`.
    pub kind: String,
    /// The confirmation URL (empty for reauthentication).
    pub link: String,
    /// The one-time code.
    pub otp: String,
    pub token_hash: String,
    pub redirect_to: String,
}

/// Where mail goes.
pub struct Mailer {
    outbox: Option<PathBuf>,
    smtp: Option<(SmtpConfig, TlsConnector)>,
    from: String,
    from_name: String,
}

impl Mailer {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let smtp = match &config.smtp {
            Some(smtp) => Some((smtp.clone(), tls_connector(smtp)?)),
            None => None,
        };
        Ok(Self {
            outbox: config.outbox_dir.clone(),
            smtp,
            from: config.smtp_admin_email.clone(),
            from_name: config.smtp_sender_name.clone(),
        })
    }

    /// Delivers `mail` to every configured destination.
    pub async fn send(&self, mail: &Mail) -> anyhow::Result<()> {
        if self.outbox.is_none() && self.smtp.is_none() {
            tracing::warn!(
                kind = %mail.kind,
                "no SMTP relay or outbox directory configured; mail not delivered"
            );
        }
        if let Some(dir) = &self.outbox {
            tokio::fs::create_dir_all(dir).await?;
            let name = format!(
                "{}-{}.json",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
                uuid::Uuid::new_v4().simple()
            );
            let tmp = dir.join(format!(".{name}.tmp"));
            tokio::fs::write(&tmp, serde_json::to_vec_pretty(mail)?).await?;
            tokio::fs::rename(&tmp, dir.join(name)).await?;
        }
        if let Some((smtp, tls)) = &self.smtp {
            let message = self.render(mail);
            tokio::time::timeout(
                SMTP_TIMEOUT,
                send_smtp(smtp, tls, &self.from, &mail.to, &message),
            )
            .await
            .map_err(|_| anyhow::anyhow!("smtp relay timed out"))??;
        }
        Ok(())
    }

    fn render(&self, mail: &Mail) -> String {
        let date = chrono::Utc::now().to_rfc2822();
        let id = uuid::Uuid::new_v4().simple();
        let domain = self.from.rsplit('@').next().unwrap_or("localhost");
        format!(
            "From: {} <{}>\r\nTo: <{}>\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{id}@{domain}>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            header_safe(&self.from_name),
            header_safe(&self.from),
            header_safe(&mail.to),
            header_safe(&mail.subject),
            mail.body.replace('\n', "\r\n"),
        )
    }
}

fn header_safe(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// Reads one (possibly multi-line) reply; fails unless its code starts with `code`.
async fn expect<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
    code: &str,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            anyhow::bail!("smtp relay closed the connection");
        }
        if !line.starts_with(code) {
            anyhow::bail!("smtp relay answered {:?}", line.trim_end());
        }
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").trim_end().to_owned());
        // `250-` continues a multi-line reply, `250 ` ends it.
        if last {
            return Ok(lines);
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    line: &str,
    code: &str,
) -> anyhow::Result<Vec<String>> {
    s.write_all(line.as_bytes()).await?;
    s.write_all(b"\r\n").await?;
    s.flush().await?;
    expect(s, code).await
}

/// The TLS client configuration: the web PKI roots plus the configured CA file.
pub fn tls_connector(smtp: &SmtpConfig) -> anyhow::Result<TlsConnector> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &smtp.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("reading FERROBASE_SMTP_CA_FILE: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| anyhow::anyhow!("reading FERROBASE_SMTP_CA_FILE: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("FERROBASE_SMTP_CA_FILE: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A minimal SMTP client: EHLO, TLS as configured, optional AUTH PLAIN, one message.
async fn send_smtp(
    smtp: &SmtpConfig,
    tls: &TlsConnector,
    from: &str,
    to: &str,
    message: &str,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect((smtp.host.as_str(), smtp.port)).await?;
    let server_name = rustls_pki_types::ServerName::try_from(smtp.host.clone())
        .map_err(|e| anyhow::anyhow!("smtp host is not a valid TLS name: {e}"))?;
    let implicit = match smtp.tls {
        SmtpTls::Tls => true,
        SmtpTls::Auto => smtp.port == 465,
        SmtpTls::StartTls | SmtpTls::None => false,
    };
    if implicit {
        let mut s = BufReader::new(tls.connect(server_name, tcp).await?);
        expect(&mut s, "220").await?;
        command(&mut s, "EHLO ferrobase", "250").await?;
        return deliver(&mut s, smtp, true, from, to, message).await;
    }
    let mut s = BufReader::new(tcp);
    expect(&mut s, "220").await?;
    let capabilities = command(&mut s, "EHLO ferrobase", "250").await?;
    let offers_starttls = capabilities
        .iter()
        .any(|c| c.eq_ignore_ascii_case("STARTTLS"));
    let upgrade = match smtp.tls {
        SmtpTls::StartTls if !offers_starttls => {
            anyhow::bail!("smtp relay does not offer STARTTLS")
        }
        SmtpTls::StartTls => true,
        SmtpTls::Auto => offers_starttls,
        SmtpTls::Tls | SmtpTls::None => false,
    };
    if !upgrade {
        let allow_clear = smtp.tls == SmtpTls::None;
        return deliver(&mut s, smtp, allow_clear, from, to, message).await;
    }
    command(&mut s, "STARTTLS", "220").await?;
    let mut s = BufReader::new(tls.connect(server_name, s.into_inner()).await?);
    command(&mut s, "EHLO ferrobase", "250").await?;
    deliver(&mut s, smtp, true, from, to, message).await
}

async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    smtp: &SmtpConfig,
    may_authenticate: bool,
    from: &str,
    to: &str,
    message: &str,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    if let (Some(user), Some(pass)) = (&smtp.user, &smtp.pass) {
        if !may_authenticate {
            anyhow::bail!(
                "smtp relay offers no TLS; credentials are not sent in clear text \
                 (FERROBASE_SMTP_TLS=none allows it)"
            );
        }
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{}", pass.0.expose_secret()));
        command(s, &format!("AUTH PLAIN {token}"), "235").await?;
    }
    command(s, &format!("MAIL FROM:<{}>", header_safe(from)), "250").await?;
    command(s, &format!("RCPT TO:<{}>", header_safe(to)), "25").await?;
    command(s, "DATA", "354").await?;
    // Dot-stuffing: a line starting with `.` gets another.
    let mut data = String::with_capacity(message.len() + 8);
    for line in message.trim_end_matches("\r\n").split("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push('.');
    command(s, &data, "250").await?;
    let _ = command(s, "QUIT", "221").await;
    Ok(())
}
