//! The recording: every `/api/v1/` request and the server's reply, in the shape of the captures
//! (`../shared/spec/captures/*.jsonl`), kept in memory and optionally appended to a JSONL file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request and its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// Unix time the request arrived.
    pub t: f64,
    /// HTTP method.
    pub method: String,
    /// Path as received (e.g. `/api/v1/asample`).
    pub path: String,
    /// Query string without `?` (empty when none).
    pub query: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: String,
    /// Request headers in the order received, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Request body size on the wire.
    pub body_len: usize,
    /// The request body parsed as JSON (JSON requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The `forward_backward` body decoded from protobuf (arrays decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_proto: Option<Value>,
    /// Reply status (0 when the connection was dropped without a reply).
    pub resp_status: u16,
    /// The reply body parsed as JSON (JSON replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_body: Option<Value>,
    /// The reply's content type, for non-JSON replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_ctype: Option<String>,
    /// Reply body size.
    pub resp_body_len: usize,
    /// The injected fault, if one fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

impl Exchange {
    /// The path after `/api/v1/` (`"retrieve_future"`, `"training_runs/x:train:0/checkpoints"`).
    pub fn endpoint(&self) -> &str {
        self.path.strip_prefix("/api/v1/").unwrap_or(&self.path)
    }

    /// A request header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A field of the JSON request body.
    pub fn body_field(&self, key: &str) -> Option<&Value> {
        self.body.as_ref()?.get(key)
    }
}

/// Unix time now, as the captures write it.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The in-memory log (bounded) plus the optional file.
#[derive(Debug)]
pub(crate) struct Recorder {
    entries: Mutex<VecDeque<(u64, Exchange)>>,
    limit: usize,
    file: Option<Mutex<BufWriter<File>>>,
}

impl Recorder {
    pub fn new(limit: usize, path: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match path {
            Some(p) => Some(Mutex::new(BufWriter::new(File::create(p)?))),
            None => None,
        };
        Ok(Recorder {
            entries: Mutex::new(VecDeque::new()),
            limit,
            file,
        })
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0 || self.file.is_some()
    }

    /// Adds an exchange; `arrival` orders the in-memory log by request arrival.
    pub fn push(&self, arrival: u64, exchange: Exchange) {
        if let Some(file) = &self.file {
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(line) = serde_json::to_string(&exchange) {
                // A failing disk must not take the server down; the in-memory log still has it.
                let _ = writeln!(f, "{line}").and_then(|_| f.flush());
            }
        }
        if self.limit == 0 {
            return;
        }
        let mut g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= self.limit {
            g.pop_front();
        }
        g.push_back((arrival, exchange));
    }

    pub fn snapshot(&self) -> Vec<Exchange> {
        let mut all: Vec<(u64, Exchange)> = {
            let g = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            g.iter().cloned().collect()
        };
        all.sort_by_key(|(arrival, _)| *arrival);
        all.into_iter().map(|(_, e)| e).collect()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
