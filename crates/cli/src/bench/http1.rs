//! A lean HTTP/1.1 keep-alive client for the measured loops of `bench rest`.
//!
//! The load generator shares the machine's cores with the servers it measures,
//! and the pgbench ceilings it is read against pay only pgbench's own small
//! client cost. A general-purpose client (connection pool, tower stack, header
//! maps) spent about 60 µs of CPU per request here, more than half of what the
//! gateway spends; this one writes a prepared request and reads the answer on
//! one connection per worker, as wrk does. Correctness of every answer is still
//! checked with reqwest before measuring (`Server::check`).

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Where requests go: `http://host:port` and the path every request starts with.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, to connect to and to send as `Host`.
    authority: String,
    /// The base URL's path without a trailing slash (`/rest/v1`), or empty.
    prefix: String,
}

impl Target {
    /// Parses a plain `http://` base URL.
    pub fn parse(base: &str) -> anyhow::Result<Self> {
        let rest = base
            .strip_prefix("http://")
            .with_context(|| format!("{base}: the load generator speaks plain http:// only"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        anyhow::ensure!(!authority.is_empty(), "{base}: no host");
        Ok(Self {
            authority: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The bytes of one request: `path` below the prefix, `headers` as
    /// `(name, value)`, and `body` with its length when there is one.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + body.map_or(0, <[u8]>::len));
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nhost: {}\r\n",
            self.prefix, self.authority
        );
        out.extend_from_slice(head.as_bytes());
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if let Some(body) = body {
            out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// One keep-alive connection, opened on first use and again after a failure
/// or a `connection: close`.
#[derive(Debug)]
pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The last answer's body (de-chunked).
    body: Vec<u8>,
}

/// A complete answer: its status and the length of its (de-chunked) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body_len: usize,
}

impl Conn {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            body: Vec::new(),
        }
    }

    /// The body of the answer [`Conn::send`] read last.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sends `request` (from [`Target::request`]) and reads the whole answer.
    /// On any error the connection is dropped, so the next call starts afresh.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        let result = self.exchange(request).await;
        match &result {
            Ok((_, keep)) if *keep => {}
            _ => self.stream = None,
        }
        result.map(|(answer, _)| answer)
    }

    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(Answer, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.target.authority).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            unreachable!("connected above")
        };
        stream.write_all(request).await?;
        self.buf.clear();
        self.body.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            anyhow::ensure!(self.buf.len() < 64 * 1024, "response head too long");
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let (mut length, mut chunked, mut keep) = (None, false, true);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                keep = !value.eq_ignore_ascii_case("close");
            }
        }
        if chunked {
            read_chunked(stream, &mut self.buf, head_end, &mut self.body).await?;
        } else if let Some(n) = length {
            while self.buf.len() < head_end + n {
                read_more(stream, &mut self.buf).await?;
            }
            self.body
                .extend_from_slice(&self.buf[head_end..head_end + n]);
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // Delimited by the end of the connection.
            while stream.read_buf(&mut self.buf).await? > 0 {}
            keep = false;
            self.body.extend_from_slice(&self.buf[head_end..]);
        }
        let body_len = self.body.len();
        Ok((Answer { status, body_len }, keep))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    buf.reserve(8 * 1024);
    if stream.read_buf(buf).await? == 0 {
        anyhow::bail!("the server closed the connection mid-answer");
    }
    Ok(())
}

/// Reads a chunked body starting at `at` into `body`.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut at: usize,
    body: &mut Vec<u8>,
) -> anyhow::Result<()> {
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[at..], b"\r\n") {
                break at + i;
            }
            read_more(stream, buf).await?;
        };
        let size_text = std::str::from_utf8(&buf[at..line_end]).context("chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("chunk size")?;
        at = line_end + 2;
        if size == 0 {
            // Optional trailer lines, then the empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(&buf[at..], b"\r\n") {
                        break at + i;
                    }
                    read_more(stream, buf).await?;
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(());
                }
            }
        }
        while buf.len() < at + size + 2 {
            read_more(stream, buf).await?;
        }
        anyhow::ensure!(&buf[at + size..at + size + 2] == b"\r\n", "bad chunk end");
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// A server answering each request on a connection with the next of `answers`.
    async fn serve(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut seen = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = s.read(&mut chunk).await else {
                        break;
                    };
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                    if find(&seen, b"\r\n\r\n").is_none() {
                        continue;
                    }
                    seen.clear();
                    let Some(answer) = answers.next() else { return };
                    if s.write_all(answer).await.is_err() {
                        break;
                    }
                    if find(answer, b"connection: close").is_some() {
                        break;
                    }
                }
            }
        });
        format!("http://{addr}/rest/v1/")
    }

    #[tokio::test]
    async fn reads_sized_chunked_empty_and_closing_answers_on_one_client() {
        let base = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let target = Target::parse(&base).unwrap_or_else(|e| panic!("{e}"));
        let req = target.request("GET", "/t?a=eq.1", &[("apikey", "k")], None);
        let text = String::from_utf8_lossy(&req);
        assert!(text.starts_with("GET /rest/v1/t?a=eq.1 HTTP/1.1\r\nhost: 127.0.0.1:"));
        assert!(text.ends_with("apikey: k\r\n\r\n"));
        let mut conn = Conn::new(target);
        let mut got = Vec::new();
        let mut bodies = Vec::new();
        for _ in 0..5 {
            got.push(conn.send(&req).await.unwrap_or_else(|e| panic!("{e}")));
            bodies.push(String::from_utf8_lossy(conn.body()).into_owned());
        }
        assert_eq!(bodies, ["hello", "abcde", "", "until the end", ""]);
        let want = [(200, 5), (201, 5), (204, 0), (200, 13), (404, 0)];
        let got: Vec<(u16, usize)> = got.iter().map(|a| (a.status, a.body_len)).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let base = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\nconnection: close\r\n\r\nshort",
        ])
        .await;
        let target = Target::parse(&base).unwrap_or_else(|e| panic!("{e}"));
        let req = target.request("POST", "/t", &[], Some(b"{}"));
        assert!(String::from_utf8_lossy(&req).ends_with("content-length: 2\r\n\r\n{}"));
        let mut conn = Conn::new(target);
        assert!(conn.send(&req).await.is_err());
    }

    #[test]
    fn only_plain_http_urls_are_targets() {
        assert!(Target::parse("https://example.com").is_err());
        let t = Target::parse("http://127.0.0.1:9/api").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1:9", "/api")
        );
    }
}
