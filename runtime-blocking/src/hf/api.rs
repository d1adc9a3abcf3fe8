//! The Hugging Face Hub HTTP API, the subset `huggingface_hub` uses to upload a folder:
//!
//! | call | request |
//! |---|---|
//! | who am I | `GET /api/whoami-v2` |
//! | create repo | `POST /api/repos/create` `{name, organization?, private, type: "model"}` (409 = exists) |
//! | create branch | `POST /api/models/{repo}/branch/{rev}` (409 = exists) |
//! | read a file | `GET /{repo}/resolve/{rev}/{path}` |
//! | upload modes | `POST /api/models/{repo}/preupload/{rev}` `{files: [{path, sample, size}]}` |
//! | LFS upload | `POST /{repo}.git/info/lfs/objects/batch` (git-lfs batch API), then `PUT` to each upload URL (one part, or one `PUT` per part when the server sends `chunk_size` and completes with a `POST`), then the `verify` action |
//! | commit | `POST /api/models/{repo}/commit/{rev}` (ndjson: header, then `file` / `lfsFile` lines) |
//!
//! Every call to the Hub carries `Authorization: Bearer <token>`; LFS upload URLs (often signed
//! storage URLs) get only the headers the batch reply names.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use tinker_core::error::StatusError;
use tinker_core::io::{BlockingHttp, Timeouts};
use tinker_core::settings::Secret;
use tinker_core::tokenizer::{encode_segment, user_agent};
use tinker_core::{Error, Result};

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self, what: &str) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| Error::decode(what, e.to_string()))
    }
}

/// A Hub endpoint and the token to use with it.
pub(crate) struct Hub<'a> {
    pub(crate) http: &'a dyn BlockingHttp,
    pub(crate) endpoint: String,
    pub(crate) token: Secret,
    pub(crate) timeouts: Timeouts,
}

impl Hub<'_> {
    pub(crate) fn send(
        &self,
        method: http::Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
        authorized: bool,
        extra: &[(String, String)],
    ) -> Result<Reply> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::USER_AGENT, user_agent());
        if authorized {
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            );
        }
        if let Some(ct) = content_type {
            request = request.header(http::header::CONTENT_TYPE, ct);
            if ct == LFS_JSON {
                request = request.header(http::header::ACCEPT, LFS_JSON);
            }
        }
        for (k, v) in extra {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request
            .body(body)
            .map_err(|e| Error::Config(format!("invalid Hugging Face Hub URL {url:?}: {e}")))?;
        let response = self
            .http
            .send(request, self.timeouts)
            .map_err(|e| Error::Transport {
                endpoint: url.to_owned(),
                message: e.to_string(),
                attempts: 1,
            })?;
        let mut body = Vec::new();
        let mut reader = response.body;
        std::io::Read::read_to_end(&mut reader, &mut body).map_err(|e| Error::Transport {
            endpoint: url.to_owned(),
            message: e.to_string(),
            attempts: 1,
        })?;
        Ok(Reply {
            status: response.head.status.as_u16(),
            headers: response.head.headers,
            body,
        })
    }

    /// `send` that turns any status outside 2xx (and `also_ok`) into [`Error::Status`].
    pub(crate) fn call(
        &self,
        method: http::Method,
        url: &str,
        json_body: Option<&Value>,
        also_ok: &[u16],
    ) -> Result<Reply> {
        let (ct, body) = match json_body {
            Some(v) => (Some("application/json"), Bytes::from(v.to_string())),
            None => (None, Bytes::new()),
        };
        let reply = self.send(method, url, ct, body, true, &[])?;
        expect_ok(reply, url, also_ok)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// `GET /api/whoami-v2`: the user's name; 401 → the token is invalid.
    pub(crate) fn whoami(&self) -> Result<String> {
        let url = self.url("/api/whoami-v2");
        let reply = self.send(http::Method::GET, &url, None, Bytes::new(), true, &[])?;
        if reply.status == 401 {
            return Err(Error::Config(
                "Invalid Hugging Face token (401 from /api/whoami-v2)".into(),
            ));
        }
        let v = expect_ok(reply, &url, &[])?.json("whoami-v2 reply")?;
        v["name"]
            .as_str()
            .or_else(|| v["user"]["name"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::decode("whoami-v2 reply", "`name` is missing"))
    }

    /// Creates the repository, or finds it existing; returns its full `namespace/name` id.
    pub(crate) fn create_repo(&self, repo_id: &str, private: bool, user: &str) -> Result<String> {
        let (namespace, name) = match repo_id.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, repo_id),
        };
        let mut body = json!({"name": name, "private": private, "type": "model"});
        if let Some(ns) = namespace {
            body["organization"] = json!(ns);
        }
        let url = self.url("/api/repos/create");
        let reply = self.call(http::Method::POST, &url, Some(&body), &[409])?;
        let full = |ns: &str| format!("{ns}/{name}");
        if reply.status == 409 {
            return Ok(namespace.map_or_else(|| full(user), |_| repo_id.to_owned()));
        }
        // The reply's `url` is `<endpoint>/<namespace>/<name>`.
        let from_url = reply
            .json("repos/create reply")
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_owned))
            .and_then(|u| {
                let id = u.strip_prefix(&self.endpoint)?.trim_matches('/').to_owned();
                id.contains('/').then_some(id)
            });
        Ok(
            from_url
                .unwrap_or_else(|| namespace.map_or_else(|| full(user), |_| repo_id.to_owned())),
        )
    }

    /// Creates branch `revision` from `main` unless it is `main` or exists.
    pub(crate) fn ensure_branch(&self, repo_id: &str, revision: &str) -> Result<()> {
        if revision == "main" || revision.starts_with("refs/") {
            return Ok(());
        }
        let url = self.url(&format!(
            "/api/models/{repo_id}/branch/{}",
            encode_segment(revision)
        ));
        self.call(http::Method::POST, &url, Some(&json!({})), &[409])?;
        Ok(())
    }

    /// A file of the repository at `revision`, `None` when the Hub has none (any 4xx).
    pub(crate) fn read_file(
        &self,
        repo_id: &str,
        revision: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>> {
        let url = self.url(&format!(
            "/{repo_id}/resolve/{}/{path}",
            encode_segment(revision)
        ));
        let reply = self.send(http::Method::GET, &url, None, Bytes::new(), true, &[])?;
        match reply.status {
            200 => Ok(Some(reply.body)),
            400..=499 => Ok(None),
            _ => expect_ok(reply, &url, &[]).map(|_| None),
        }
    }

    /// Whether each file goes through LFS, by path.
    pub(crate) fn preupload(
        &self,
        repo_id: &str,
        revision: &str,
        create_pr: bool,
        files: &[(String, Vec<u8>, u64)],
    ) -> Result<Vec<bool>> {
        let entries: Vec<Value> = files
            .iter()
            .map(|(path, sample, size)| {
                json!({"path": path, "sample": base64::engine::general_purpose::STANDARD.encode(sample), "size": size})
            })
            .collect();
        let url = self.url(&format!(
            "/api/models/{repo_id}/preupload/{}{}",
            encode_segment(revision),
            if create_pr { "?create_pr=1" } else { "" }
        ));
        let v = self
            .call(
                http::Method::POST,
                &url,
                Some(&json!({"files": entries})),
                &[],
            )?
            .json("preupload reply")?;
        let modes = v["files"].as_array().cloned().unwrap_or_default();
        files
            .iter()
            .map(|(path, _, _)| {
                let entry = modes.iter().find(|m| m["path"].as_str() == Some(path));
                match entry.and_then(|m| m["uploadMode"].as_str()) {
                    Some("lfs") => Ok(true),
                    Some("regular") => Ok(false),
                    _ => Err(Error::decode(
                        "preupload reply",
                        format!("files[path={path}].uploadMode is missing or unknown"),
                    )),
                }
            })
            .collect()
    }

    /// Uploads one LFS object unless the Hub has it already.
    pub(crate) fn upload_lfs(
        &self,
        repo_id: &str,
        revision: &str,
        oid: &str,
        content: &Bytes,
    ) -> Result<()> {
        let size = content.len() as u64;
        let url = self.url(&format!("/{repo_id}.git/info/lfs/objects/batch"));
        let body = json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": [{"oid": oid, "size": size}],
            "hash_algo": "sha256",
            "ref": {"name": revision},
        });
        let reply = self.send(
            http::Method::POST,
            &url,
            Some(LFS_JSON),
            Bytes::from(body.to_string()),
            true,
            &[],
        )?;
        let v = expect_ok(reply, &url, &[])?.json("LFS batch reply")?;
        let object = v["objects"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["oid"].as_str() == Some(oid)))
            .ok_or_else(|| {
                Error::decode("LFS batch reply", format!("objects[oid={oid}] is missing"))
            })?;
        if let Some(err) = object.get("error") {
            return Err(Error::decode(
                "LFS batch reply",
                format!("objects[oid={oid}].error: {err}"),
            ));
        }
        let actions = &object["actions"];
        if let Some(upload) = actions.get("upload") {
            let href = upload["href"].as_str().ok_or_else(|| {
                Error::decode("LFS batch reply", "actions.upload.href is missing")
            })?;
            let header = headers_of(&upload["header"]);
            match header.iter().find(|(k, _)| k == "chunk_size") {
                Some((_, chunk)) => self.upload_parts(href, oid, chunk, &header, content)?,
                None => {
                    let reply = self.send(
                        http::Method::PUT,
                        href,
                        None,
                        content.clone(),
                        false,
                        &header,
                    )?;
                    expect_ok(reply, href, &[])?;
                }
            }
        }
        if let Some(verify) = actions.get("verify") {
            let href = verify["href"].as_str().ok_or_else(|| {
                Error::decode("LFS batch reply", "actions.verify.href is missing")
            })?;
            let body = json!({"oid": oid, "size": size}).to_string();
            let reply = self.send(
                http::Method::POST,
                href,
                Some(LFS_JSON),
                Bytes::from(body),
                true,
                &headers_of(&verify["header"]),
            )?;
            expect_ok(reply, href, &[])?;
        }
        Ok(())
    }

    /// The multipart transfer: the header's numbered keys are the part URLs, one per
    /// `chunk_size` bytes; each part's `ETag` goes into the completion `POST`.
    fn upload_parts(
        &self,
        completion: &str,
        oid: &str,
        chunk_size: &str,
        header: &[(String, String)],
        content: &Bytes,
    ) -> Result<()> {
        let bad = |m: String| Error::decode("LFS batch reply", m);
        let chunk: usize = chunk_size.parse().ok().filter(|&c| c > 0).ok_or_else(|| {
            bad(format!(
                "chunk_size {chunk_size:?} is not a positive integer"
            ))
        })?;
        let mut urls: Vec<(usize, &str)> = header
            .iter()
            .filter_map(|(k, v)| Some((k.parse::<usize>().ok()?, v.as_str())))
            .collect();
        urls.sort();
        let parts = content.len().div_ceil(chunk);
        if urls.len() != parts {
            return Err(bad(format!(
                "{} part URLs for {parts} parts of {chunk} bytes",
                urls.len()
            )));
        }
        let mut etags = Vec::new();
        for (i, (number, part_url)) in urls.into_iter().enumerate() {
            let end = ((i + 1) * chunk).min(content.len());
            let reply = self.send(
                http::Method::PUT,
                part_url,
                None,
                content.slice(i * chunk..end),
                false,
                &[],
            )?;
            let reply = expect_ok(reply, part_url, &[])?;
            let etag = reply
                .headers
                .get(http::header::ETAG)
                .and_then(|e| e.to_str().ok())
                .ok_or_else(|| bad(format!("part {number} of {oid} came back without an ETag")))?;
            etags.push(json!({"partNumber": number, "etag": etag}));
        }
        let body = json!({"oid": oid, "parts": etags}).to_string();
        let reply = self.send(
            http::Method::POST,
            completion,
            Some("application/json"),
            Bytes::from(body),
            false,
            &[],
        )?;
        expect_ok(reply, completion, &[])?;
        Ok(())
    }

    /// The commit; returns the reply (`commitUrl`, `commitOid`, `pullRequestUrl`).
    pub(crate) fn commit(
        &self,
        repo_id: &str,
        revision: &str,
        create_pr: bool,
        summary: &str,
        operations: &[Value],
    ) -> Result<Value> {
        let mut lines = vec![
            json!({"key": "header", "value": {"summary": summary, "description": ""}}).to_string(),
        ];
        lines.extend(operations.iter().map(Value::to_string));
        let url = self.url(&format!(
            "/api/models/{repo_id}/commit/{}{}",
            encode_segment(revision),
            if create_pr { "?create_pr=1" } else { "" }
        ));
        let reply = self.send(
            http::Method::POST,
            &url,
            Some("application/x-ndjson"),
            Bytes::from(lines.join("\n") + "\n"),
            true,
            &[],
        )?;
        expect_ok(reply, &url, &[])?.json("commit reply")
    }
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn expect_ok(reply: Reply, url: &str, also_ok: &[u16]) -> Result<Reply> {
    if (200..300).contains(&reply.status) || also_ok.contains(&reply.status) {
        return Ok(reply);
    }
    let mut body = String::from_utf8_lossy(&reply.body).into_owned();
    if body.len() > 500 {
        let mut cut = 500;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    Err(Error::Status(Box::new(StatusError {
        status: reply.status,
        body,
        endpoint: url.to_owned(),
        request_id: None,
        server_log_id: None,
        attempts: 1,
    })))
}
