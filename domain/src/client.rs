//! A blocking client of the HTTP API, used by the command line's
//! `--server URL --token TOKEN` mode, the end-to-end tests and the service
//! benchmark.

use std::time::Duration;

use serde_json::Value;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and its message.
    #[error("the server refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("cannot reach the server at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("the server's answer is not JSON: {0}")]
    Malformed(String),
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A connection to one server as one user.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A raw answer: status and body, for tests that look at every status.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    /// `base` is like `http://127.0.0.1:8787` or `https://unseen.example`
    /// (a certificate under Mozilla's roots).
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Client::build(base, token, ureq::tls::RootCerts::WebPki)
    }

    /// A client of an HTTPS server whose certificate chains to one of the
    /// certificates in the PEM file `ca` (an agency's own CA, or the
    /// server's self-signed certificate).
    pub fn with_ca(
        base: &str,
        token: Option<&str>,
        ca: &std::path::Path,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Transport {
            url: base.to_string(),
            reason: format!("the CA certificates in {}: {reason}", ca.display()),
        };
        let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
        let roots: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(bad(e.to_string()))),
            })
            .collect::<Result<_, _>>()?;
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        Ok(Client::build(
            base,
            token,
            ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)),
        ))
    }

    fn build(base: &str, token: Option<&str>, roots: ureq::tls::RootCerts) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            agent,
        }
    }

    /// The same server as another user.
    pub fn with_token(&self, token: &str) -> Self {
        Client {
            base: self.base.clone(),
            token: Some(token.to_string()),
            agent: self.agent.clone(),
        }
    }

    /// Sends a request and returns the status and JSON body, whatever the status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Result<Answer, ClientError> {
        let (status, _, text) = self.send_text(method, path, body, content_type)?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|_| ClientError::Malformed(text.chars().take(200).collect()))?
        };
        Ok(Answer { status, body })
    }

    /// `GET path` of a text answer (like `/metrics`): its content type and
    /// text, or the server's refusal.
    pub fn get_text(&self, path: &str) -> Result<(String, String), ClientError> {
        let (status, kind, text) = self.send_text("GET", path, None, "")?;
        if (200..300).contains(&status) {
            return Ok((kind, text));
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self::checked(Answer { status, body }).map(|_| (kind, text))
    }

    /// Sends a request; the status, content type and body text, whatever
    /// the status and the body.
    pub fn send_text(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Result<(u16, String, String), ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| ClientError::Transport {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let response = match body {
            Some(bytes) => {
                let request = request
                    .header("Content-Type", content_type)
                    .body(bytes.to_vec())
                    .map_err(|e| ClientError::Malformed(e.to_string()))?;
                self.agent.run(request).map_err(transport)?
            }
            None => {
                let request = request
                    .body(())
                    .map_err(|e| ClientError::Malformed(e.to_string()))?;
                self.agent.run(request).map_err(transport)?
            }
        };
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(transport)?;
        Ok((status, kind, text))
    }

    fn checked(answer: Answer) -> Result<Value, ClientError> {
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let message = answer.body["error"]["message"]
            .as_str()
            .map_or_else(|| answer.body.to_string(), str::to_string);
        Err(ClientError::Refused {
            status: answer.status,
            message,
        })
    }

    /// Sends `body` (a request type of the API crate) and reads the answer
    /// as `R` (a response type): a field either side renames is a compile
    /// error or a clear `Malformed` error, never a default.
    pub fn call<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        Self::read_as(path, self.post(path, body)?)
    }

    /// Uploads a module (`kind` `job` or `udf`); its id and functions.
    pub fn upload_module(
        &self,
        bytes: &[u8],
        kind: &str,
    ) -> Result<unseen_api::ModuleUploaded, ClientError> {
        let path = format!("/v1/modules?kind={kind}");
        Self::read_as(&path, self.post_bytes(&path, bytes, "application/wasm")?)
    }

    /// An answer read as a response type of the API crate.
    fn read_as<R: serde::de::DeserializeOwned>(path: &str, value: Value) -> Result<R, ClientError> {
        serde_json::from_value(value).map_err(|e| ClientError::Malformed(format!("{path}: {e}")))
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        Self::checked(self.send("GET", path, None, "")?)
    }

    /// Sends `body` as JSON (a request type of the API crate, or any JSON).
    pub fn post<B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Value, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Malformed(e.to_string()))?;
        Self::checked(self.send("POST", path, Some(&bytes), "application/json")?)
    }

    pub fn post_bytes(
        &self,
        path: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<Value, ClientError> {
        Self::checked(self.send("POST", path, Some(bytes), content_type)?)
    }
}
