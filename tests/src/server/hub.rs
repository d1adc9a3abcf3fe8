//! A Hugging Face Hub stand-in, mounted under `/_hub` (point `HF_ENDPOINT` at
//! `<server url>/_hub`). It serves the tokenizers of the served base models and accepts the
//! upload protocol `huggingface_hub` (and tinker-rs's `push_to_hub`) speaks, so tokenizer
//! loading and checkpoint export run offline.
//!
//! | route (under `/_hub`) | what |
//! |---|---|
//! | `GET /{org}/{name}/resolve/{rev}/{path}` | a file's bytes (404 `Entry not found`); private repos need a token |
//! | `GET /api/whoami-v2` | `{"type": "user", "name": "local-user", "orgs": [{"name": "local-org"}]}`; any `Bearer hf_…` token is valid, others 401 |
//! | `POST /api/repos/create` | `{name, organization?, private}` → 200 `{url}`, or 409 when it exists |
//! | `POST /api/models/{org}/{name}/branch/{branch}` | creates a branch from `main` (409 when it exists) |
//! | `POST /api/models/{org}/{name}/preupload/{rev}` | `{files: [{path, sample, size}]}` → per file `uploadMode` `lfs` (weights, binary or > 10 MiB) or `regular` |
//! | `POST /{org}/{name}.git/info/lfs/objects/batch` | git-lfs batch API, `basic` transfer: upload + verify actions for objects not stored yet |
//! | `PUT /_lfs/{oid}` · `POST /_lfs/{oid}/verify` | the LFS object store (the SHA-256 is checked) |
//! | `PUT /_lfs/{oid}/part/{n}` · `POST /_lfs/{oid}/complete` | multipart transfer: each part answers an `ETag`; the completion `{oid, parts: [{partNumber, etag}]}` assembles them |
//! | `POST /api/models/{org}/{name}/commit/{rev}` | ndjson commit: `header`, `file` (base64) and `lfsFile` lines; `?create_pr=1` commits to `refs/pr/N` |
//! | `GET /_admin/repos` | inspection: every repo, its branches with their files, its commits |
//! | `POST /_admin/lfs` | `{"multipart_chunk_size": N}`: objects larger than N bytes are uploaded in N-byte parts (`null`: never) |
//! | `PUT /_admin/repos/{org}/{name}/files/{rev}/{path}` | seeds a file (no auth) |
//!
//! Every base model of the default configuration has a `tokenizer.json` equal to the toy
//! model's byte tokenizer (id `b` is byte `b`) plus the chat special tokens from id 256 on
//! ([`CHAT_SPECIAL_TOKENS`]), as does the Llama 3 tokenizer repository the SDK substitutes for
//! `meta-llama/Llama-3*`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::state::lock;

/// The user every valid token belongs to.
pub const HUB_USER: &str = "local-user";
/// The organisation that user may also create repositories in.
pub const HUB_ORG: &str = "local-org";

/// The special tokens of the served tokenizers, with ids 256, 257, … in this order.
pub const CHAT_SPECIAL_TOKENS: [&str; 7] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

/// The repositories whose `tokenizer.json` is served from the start.
const TOKENIZER_REPOS: [&str; 4] = [
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-235B-A22B-Instruct-2507",
    "meta-llama/Llama-3.2-1B",
    "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer",
];

type Files = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Default)]
struct Repo {
    private: bool,
    branches: BTreeMap<String, Files>,
    commits: Vec<Value>,
}

#[derive(Debug, Default)]
pub(crate) struct HubState {
    repos: Mutex<BTreeMap<String, Repo>>,
    lfs: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Objects larger than this are uploaded in parts (set with `POST /_admin/lfs`).
    multipart_chunk: Mutex<Option<usize>>,
    /// Parts received so far, by object id and part number.
    parts: Mutex<BTreeMap<(String, usize), Vec<u8>>>,
}

/// The Hub router (state included), for `Router::nest("/_hub", …)`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let hub = HubState::default();
    {
        let mut repos = lock(&hub.repos);
        let json = byte_tokenizer_json().into_bytes();
        for repo in TOKENIZER_REPOS {
            let main = repos
                .entry(repo.to_owned())
                .or_default()
                .branches
                .entry("main".into());
            main.or_default()
                .insert("tokenizer.json".into(), json.clone());
        }
    }
    Router::new()
        .route("/{*rest}", any(handle))
        .with_state(Arc::new(hub))
}

/// The `tokenizer.json` of the toy model: a byte-level BPE without merges whose vocabulary maps
/// the GPT-2 printable character of byte `b` to id `b`, plus [`CHAT_SPECIAL_TOKENS`].
pub fn byte_tokenizer_json() -> String {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut vocab = serde_json::Map::new();
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or('?')
        };
        vocab.insert(c.to_string(), json!(b));
    }
    let added: Vec<Value> = CHAT_SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"id": 256 + i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": false});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
    .to_string()
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply(status, json!({"error": message.into()}))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok();
        match (bytes[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user a request's `Authorization: Bearer hf_…` token belongs to.
fn user(headers: &HeaderMap) -> Option<&'static str> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    auth.strip_prefix("Bearer hf_").map(|_| HUB_USER)
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}/_hub")
}

async fn handle(
    State(hub): State<Arc<HubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches('/').to_owned();
    let query = uri.query().unwrap_or("");
    let segments: Vec<&str> = path.split('/').collect();
    let authorized = user(&headers).is_some();
    let unauthorized = || {
        error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        )
    };
    match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "whoami-v2"]) => match user(&headers) {
            Some(name) => reply(
                StatusCode::OK,
                json!({"type": "user", "name": name, "orgs": [{"name": HUB_ORG}],
                       "auth": {"type": "access_token"}}),
            ),
            None => unauthorized(),
        },
        (&Method::POST, ["api", "repos", "create"]) if authorized => {
            create_repo(&hub, &headers, &body)
        }
        (&Method::POST, ["api", "models", org, name, "branch", branch]) if authorized => {
            let mut repos = lock(&hub.repos);
            let Some(repo) = repos.get_mut(&format!("{org}/{name}")) else {
                return error(StatusCode::NOT_FOUND, "Repository not found");
            };
            let branch = percent_decode(branch);
            if repo.branches.contains_key(&branch) {
                return error(StatusCode::CONFLICT, "Reference already exists");
            }
            let main = repo.branches.get("main").cloned().unwrap_or_default();
            repo.branches.insert(branch, main);
            reply(StatusCode::OK, json!({}))
        }
        (&Method::POST, ["api", "models", org, name, "preupload", _rev]) if authorized => {
            preupload(&format!("{org}/{name}"), &hub, &body)
        }
        (&Method::POST, ["api", "models", org, name, "commit", rev]) if authorized => commit(
            &hub,
            &headers,
            &format!("{org}/{name}"),
            &percent_decode(rev),
            query.split('&').any(|p| p == "create_pr=1"),
            &body,
        ),
        (&Method::POST, [org, name_git, "info", "lfs", "objects", "batch"]) if authorized => {
            lfs_batch(
                &hub,
                &headers,
                &format!("{org}/{}", name_git.trim_end_matches(".git")),
                &body,
            )
        }
        (&Method::PUT, ["_lfs", oid]) => {
            let digest = hex(&Sha256::digest(&body));
            if digest != *oid {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("content has sha256 {digest}, not {oid}"),
                );
            }
            lock(&hub.lfs).insert(digest, body.to_vec());
            reply(StatusCode::OK, json!({}))
        }
        (&Method::PUT, ["_lfs", oid, "part", n]) => {
            let Ok(n) = n.parse::<usize>() else {
                return error(StatusCode::BAD_REQUEST, "part number is not a number");
            };
            let etag = hex(&Sha256::digest(&body))[..16].to_owned();
            lock(&hub.parts).insert(((*oid).to_owned(), n), body.to_vec());
            let mut response = reply(StatusCode::OK, json!({}));
            if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
                response.headers_mut().insert(http::header::ETAG, v);
            }
            response
        }
        (&Method::POST, ["_lfs", oid, "complete"]) => complete_multipart(&hub, oid, &body),
        (&Method::POST, ["_admin", "lfs"]) => {
            let v = serde_json::from_slice::<Value>(&body).unwrap_or_default();
            *lock(&hub.multipart_chunk) = v["multipart_chunk_size"]
                .as_u64()
                .map(|c| c.max(1) as usize);
            reply(StatusCode::OK, json!({}))
        }
        (&Method::POST, ["_lfs", oid, "verify"]) => {
            let size = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["size"].as_u64());
            match lock(&hub.lfs).get(*oid) {
                Some(data) if Some(data.len() as u64) == size => reply(StatusCode::OK, json!({})),
                _ => error(StatusCode::NOT_FOUND, "object not found or size mismatch"),
            }
        }
        (&Method::GET, ["_admin", "repos"]) => reply(StatusCode::OK, inspect(&hub)),
        (&Method::PUT, ["_admin", "repos", org, name, "files", rev, file @ ..]) => {
            let mut repos = lock(&hub.repos);
            let repo = repos.entry(format!("{org}/{name}")).or_default();
            let files = repo.branches.entry(percent_decode(rev)).or_default();
            files.insert(file.join("/"), body.to_vec());
            reply(StatusCode::OK, json!({}))
        }
        (&Method::GET, [org, name, "resolve", rev, file @ ..]) if !file.is_empty() => {
            let repos = lock(&hub.repos);
            let repo = repos.get(&format!("{org}/{name}"));
            match repo {
                Some(r) if r.private && !authorized => {
                    error(StatusCode::UNAUTHORIZED, "Repository not found")
                }
                Some(r) => match r.branches.get(&percent_decode(rev)) {
                    None => error(StatusCode::NOT_FOUND, "Revision not found"),
                    Some(files) => match files.get(&file.join("/")) {
                        Some(data) => (StatusCode::OK, data.clone()).into_response(),
                        None => error(StatusCode::NOT_FOUND, "Entry not found"),
                    },
                },
                None => error(StatusCode::NOT_FOUND, "Repository not found"),
            }
        }
        (_, ["api", ..]) | (_, [_, _, "info", ..]) if !authorized => unauthorized(),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no Hub route for {method} /{path}"),
        ),
    }
}

fn create_repo(hub: &HubState, headers: &HeaderMap, body: &[u8]) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let Some(name) = req["name"]
        .as_str()
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "`name` must be a repository name without `/`",
        );
    };
    let namespace = req["organization"].as_str().unwrap_or(HUB_USER);
    if namespace != HUB_USER && namespace != HUB_ORG {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "You don't have the rights to create a model under the namespace \"{namespace}\""
            ),
        );
    }
    let repo_id = format!("{namespace}/{name}");
    let url = format!("{}/{repo_id}", base_url(headers));
    let mut repos = lock(&hub.repos);
    if repos.contains_key(&repo_id) {
        return reply(
            StatusCode::CONFLICT,
            json!({"error": "You already created this model repo", "url": url}),
        );
    }
    let mut repo = Repo {
        private: req["private"].as_bool().unwrap_or(false),
        ..Repo::default()
    };
    repo.branches.insert("main".into(), Files::new());
    repos.insert(repo_id.clone(), repo);
    reply(StatusCode::OK, json!({"url": url, "name": repo_id}))
}

fn preupload(repo_id: &str, hub: &HubState, body: &[u8]) -> Response {
    if !lock(&hub.repos).contains_key(repo_id) {
        return error(StatusCode::NOT_FOUND, "Repository not found");
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let files: Vec<Value> = req["files"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap_or_default();
            let sample = base64::engine::general_purpose::STANDARD
                .decode(f["sample"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let size = f["size"].as_u64().unwrap_or(0);
            let lfs = size > 10 << 20
                || sample.contains(&0)
                || [".safetensors", ".bin", ".pt"].iter().any(|e| path.ends_with(e));
            json!({"path": path, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false})
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({"files": files, "commitOid": "0".repeat(40)}),
    )
}

fn lfs_batch(hub: &HubState, headers: &HeaderMap, repo_id: &str, body: &[u8]) -> Response {
    if !lock(&hub.repos).contains_key(repo_id) {
        return error(StatusCode::NOT_FOUND, "Repository not found");
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let base = base_url(headers);
    let chunk = *lock(&hub.multipart_chunk);
    let stored = lock(&hub.lfs);
    let objects: Vec<Value> = req["objects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap_or_default();
            let mut object = json!({"oid": oid, "size": o["size"], "authenticated": true});
            let size = o["size"].as_u64().unwrap_or(0) as usize;
            let upload = match chunk {
                Some(chunk) if size > chunk => {
                    let mut header = json!({"chunk_size": chunk.to_string()});
                    for n in 1..=size.div_ceil(chunk) {
                        header[n.to_string()] = json!(format!("{base}/_lfs/{oid}/part/{n}"));
                    }
                    json!({"href": format!("{base}/_lfs/{oid}/complete"), "header": header})
                }
                _ => json!({"href": format!("{base}/_lfs/{oid}"), "header": {}}),
            };
            if !stored.contains_key(oid) {
                object["actions"] = json!({
                    "upload": upload,
                    "verify": {"href": format!("{base}/_lfs/{oid}/verify"), "header": {}},
                });
            }
            object
        })
        .collect();
    let mut response = reply(
        StatusCode::OK,
        json!({"transfer": "basic", "objects": objects}),
    );
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/vnd.git-lfs+json"),
    );
    response
}

/// Assembles the parts the completion lists (in order, each with the ETag its upload got).
fn complete_multipart(hub: &HubState, oid: &str, body: &[u8]) -> Response {
    let req = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let mut parts = lock(&hub.parts);
    let mut data = Vec::new();
    for (i, part) in req["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let n = part["partNumber"].as_u64().unwrap_or(0) as usize;
        if n != i + 1 {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parts[{i}].partNumber is {n}, expected {}", i + 1),
            );
        }
        let Some(chunk) = parts.remove(&(oid.to_owned(), n)) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("part {n} of {oid} was never uploaded"),
            );
        };
        let etag = format!("\"{}\"", &hex(&Sha256::digest(&chunk))[..16]);
        if part["etag"].as_str() != Some(etag.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parts[{i}].etag does not match part {n}"),
            );
        }
        data.extend(chunk);
    }
    let digest = hex(&Sha256::digest(&data));
    if digest != oid {
        return error(
            StatusCode::BAD_REQUEST,
            format!("assembled parts have sha256 {digest}, not {oid}"),
        );
    }
    lock(&hub.lfs).insert(digest, data);
    reply(StatusCode::OK, json!({}))
}

fn commit(
    hub: &HubState,
    headers: &HeaderMap,
    repo_id: &str,
    revision: &str,
    create_pr: bool,
    body: &[u8],
) -> Response {
    let mut summary = String::new();
    let mut changes = Files::new();
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(op) = serde_json::from_slice::<Value>(line) else {
            return error(StatusCode::BAD_REQUEST, format!("line {n} is not JSON"));
        };
        let value = &op["value"];
        let path = value["path"].as_str().unwrap_or_default().to_owned();
        match op["key"].as_str() {
            Some("header") => summary = value["summary"].as_str().unwrap_or_default().to_owned(),
            Some("file") => {
                let Some(content) = value["content"]
                    .as_str()
                    .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
                else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("line {n}: content is not base64"),
                    );
                };
                changes.insert(path, content);
            }
            Some("lfsFile") => {
                let oid = value["oid"].as_str().unwrap_or_default();
                let Some(data) = lock(&hub.lfs).get(oid).cloned() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("line {n}: LFS object {oid} was never uploaded"),
                    );
                };
                changes.insert(path, data);
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("line {n}: unknown key {other:?}"),
                )
            }
        }
    }
    let mut repos = lock(&hub.repos);
    let Some(repo) = repos.get_mut(repo_id) else {
        return error(StatusCode::NOT_FOUND, "Repository not found");
    };
    let Some(base) = repo.branches.get(revision).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("Invalid rev id: {revision}"));
    };
    let target = if create_pr {
        let n = repo
            .branches
            .keys()
            .filter(|b| b.starts_with("refs/pr/"))
            .count()
            + 1;
        format!("refs/pr/{n}")
    } else {
        revision.to_owned()
    };
    let paths: Vec<String> = changes.keys().cloned().collect();
    let mut files = base;
    files.extend(changes);
    repo.branches.insert(target.clone(), files);
    let oid = hex(&Sha256::digest(format!(
        "{repo_id}{target}{}",
        repo.commits.len()
    )))[..40]
        .to_owned();
    repo.commits
        .push(json!({"revision": target, "summary": summary, "files": paths, "oid": oid}));
    let url = format!("{}/{repo_id}/commit/{oid}", base_url(headers));
    let mut out = json!({"success": true, "commitOid": oid, "commitUrl": url});
    if create_pr {
        out["pullRequestUrl"] = json!(format!(
            "{}/{repo_id}/discussions/{}",
            base_url(headers),
            &target[8..]
        ));
    }
    reply(StatusCode::OK, out)
}

fn inspect(hub: &HubState) -> Value {
    let repos = lock(&hub.repos);
    let mut out = serde_json::Map::new();
    for (id, repo) in repos.iter() {
        let branches: serde_json::Map<String, Value> = repo
            .branches
            .iter()
            .map(|(b, files)| {
                let files: serde_json::Map<String, Value> = files
                    .iter()
                    .map(|(p, d)| {
                        (
                            p.clone(),
                            json!({"size": d.len(), "sha256": hex(&Sha256::digest(d))}),
                        )
                    })
                    .collect();
                (b.clone(), Value::Object(files))
            })
            .collect();
        out.insert(
            id.clone(),
            json!({"private": repo.private, "branches": branches, "commits": repo.commits}),
        );
    }
    Value::Object(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
