//! Bounded HTTP GET over plain HTTP, for the TUF conformance adapter and other HTTP mirrors.
//!
//! Every body is read with a cap: a `Content-Length` over the cap is refused before anything
//! is allocated, and a body that keeps coming past the cap (an endless-data attack, or a
//! server that lies about its length) is cut off and refused at the first byte over it.
//! `404 Not Found` and `403 Forbidden` both mean "the repository does not have this file", as
//! python-tuf's fetcher reads them; every other non-success status is an error.

use std::time::Duration;

/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed between two reads of a body (a stalled server is given up on).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most memory reserved up front for a body, whatever its announced length.
const MAX_RESERVE: u64 = 1024 * 1024;

/// Why a download failed. The repository (or the network path to it) is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// The request failed: connection, timeout, or a broken body.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL asked for.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with a status other than success or not-found.
    #[error("{url}: HTTP status {status}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server announced or sent more than the cap.
    #[error("{url}: body of {len} bytes or more is over the cap of {max} bytes")]
    TooLarge {
        /// The URL asked for.
        url: String,
        /// The announced length, or the bytes received when cut off.
        len: u64,
        /// The cap.
        max: u64,
    },
}

/// What a GET found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The body, at most the cap long.
    Bytes(Vec<u8>),
    /// The server does not have the file (404 or 403).
    NotFound,
}

/// A blocking HTTP client with bounded reads (reqwest on a private single-threaded runtime).
#[derive(Debug)]
pub struct HttpFetcher {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl HttpFetcher {
    /// A client that ignores proxy settings of the environment (the adapter talks to the
    /// repository it is pointed at, usually on loopback in a test).
    pub fn new() -> Result<Self, FetchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| FetchError::Setup(e.to_string()))?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| FetchError::Setup(e.to_string()))?;
        Ok(Self { client, runtime })
    }

    /// GET `url`, reading at most `max_len` bytes of body.
    pub fn get(&self, url: &str, max_len: u64) -> Result<Body, FetchError> {
        self.runtime.block_on(self.get_async(url, max_len))
    }

    async fn get_async(&self, url: &str, max_len: u64) -> Result<Body, FetchError> {
        let transport = |e: reqwest::Error| FetchError::Transport {
            url: url.into(),
            reason: error_chain(&e),
        };
        let mut response = self.client.get(url).send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Body::NotFound);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.into(),
                status: status.as_u16(),
            });
        }
        let too_large = |len| FetchError::TooLarge {
            url: url.into(),
            len,
            max: max_len,
        };
        let announced = response.content_length();
        if let Some(len) = announced
            && len > max_len
        {
            return Err(too_large(len));
        }
        let reserve = announced.unwrap_or(0).min(max_len).min(MAX_RESERVE);
        let mut body = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            let total = body.len() as u64 + chunk.len() as u64;
            if total > max_len {
                return Err(too_large(total));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Body::Bytes(body))
    }
}

/// A reqwest error with its sources, on one line.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Percent-encode one URL path segment: everything but RFC 3986 unreserved characters.
/// With `keep_slash`, `/` separates segments and is kept.
pub fn encode_path(path: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `base` and a relative (already encoded) path, joined by exactly one `/`.
pub fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode_path("a b/c?d#e.txt", true), "a%20b/c%3Fd%23e.txt");
        assert_eq!(
            encode_path("path/to/file.txt", false),
            "path%2Fto%2Ffile.txt"
        );
        assert_eq!(encode_path("é", false), "%C3%A9");
    }

    #[test]
    fn join_has_one_slash() {
        assert_eq!(
            join_url("http://h/m/", "1.root.json"),
            "http://h/m/1.root.json"
        );
        assert_eq!(join_url("http://h/m", "x"), "http://h/m/x");
    }
}
