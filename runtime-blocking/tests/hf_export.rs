//! Exporting a checkpoint to the Hugging Face Hub, end to end against the local server's Hub
//! stand-in: the upload lands with a patched adapter config and a model card, and a repository
//! that already holds another checkpoint is refused.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;
use tinker_blocking::hf::{push_to_hub, HfPushOptions};
use tinker_blocking::types::WeightsInfoResponse;
use tinker_blocking::{ErrorKind, UreqTransport};
use tinker_core::io::{BlockingHttp, Timeouts};
use tinker_testkit::server::{LocalServer, LocalServerConfig, ServerControl};

const TOKEN: &str = "hf_local_test_token";
const PATH_A: &str = "tinker://run-a/weights/final";
const PATH_B: &str = "tinker://run-b/weights/final";

/// Adapter weights as a binary file (NUL bytes make it an LFS upload).
const WEIGHTS: &[u8] = b"\x00\x01safetensors-header\x00weights";

/// A fresh extracted checkpoint: adapter config without a base model, weights, and the
/// completion marker Tinker puts in archives.
fn checkpoint_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tinker-hf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"r": 8, "peft_type": "LORA"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), WEIGHTS).unwrap();
    std::fs::write(dir.join("checkpoint_complete"), "").unwrap();
    dir
}

fn weights_info() -> WeightsInfoResponse {
    serde_json::from_value(serde_json::json!({
        "base_model": "Qwen/Qwen3-8B", "is_lora": true, "lora_rank": 8,
        "train_attn": true, "train_mlp": true, "train_unembed": false
    }))
    .unwrap()
}

fn options(server: &ServerControl, tinker_path: &str) -> HfPushOptions {
    HfPushOptions::new(tinker_path)
        .with_endpoint(format!("{}/_hub", server.url()))
        .with_token(TOKEN)
        .with_weights_info(weights_info())
}

fn get(server: &ServerControl, path: &str) -> (u16, Vec<u8>) {
    let request = http::Request::get(format!("{}/_hub{path}", server.url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Bytes::new())
        .unwrap();
    let mut response = UreqTransport::new()
        .send(request, Timeouts::default())
        .unwrap();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.body, &mut body).unwrap();
    (response.head.status.as_u16(), body)
}

fn repos(server: &ServerControl) -> Value {
    serde_json::from_slice(&get(server, "/_admin/repos").1).unwrap()
}

fn file(server: &ServerControl, repo: &str, rev: &str, name: &str) -> String {
    let (status, body) = get(server, &format!("/{repo}/resolve/{rev}/{name}"));
    assert_eq!(status, 200, "{repo}@{rev}/{name}");
    String::from_utf8(body).unwrap()
}

fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_adapter_is_uploaded_with_a_patched_config_and_a_model_card() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let dir = checkpoint_dir("upload");
    let opts = options(&server, PATH_A).with_repo_id("my-adapter");
    assert!(
        !format!("{opts:?}").contains(TOKEN),
        "the token stays out of Debug output"
    );
    let report = push_to_hub(&dir, &opts).unwrap();

    assert_eq!(
        report.repo_id, "local-user/my-adapter",
        "the name lands in the token's namespace"
    );
    assert_eq!(report.revision, "main");
    assert_eq!(
        report.files,
        [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors"
        ],
        "the completion marker is not uploaded"
    );
    assert_eq!(report.lfs_files, ["adapter_model.safetensors"]);

    let repo = &repos(&server)["local-user/my-adapter"];
    assert_eq!(repo["private"], true, "private unless asked");
    let commits = repo["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(
        commits[0]["summary"],
        format!("Upload adapter from {PATH_A}")
    );

    let weights = get(
        &server,
        "/local-user/my-adapter/resolve/main/adapter_model.safetensors",
    )
    .1;
    assert_eq!(weights, WEIGHTS, "the LFS object round-trips byte for byte");
    let config: Value = serde_json::from_str(&file(
        &server,
        "local-user/my-adapter",
        "main",
        "adapter_config.json",
    ))
    .unwrap();
    assert_eq!(config["base_model_name_or_path"], "Qwen/Qwen3-8B");
    assert_eq!(config["r"], 8);
    let card = file(&server, "local-user/my-adapter", "main", "README.md");
    assert!(
        card.starts_with("---\nbase_model: Qwen/Qwen3-8B\nlibrary_name: peft\n"),
        "{card}"
    );
    assert!(
        card.contains("- base_model:adapter:Qwen/Qwen3-8B"),
        "{card}"
    );
    assert!(card.contains(&format!("tinker_path: {PATH_A}")), "{card}");
    assert!(
        card.contains("adapter_id = \"local-user/my-adapter\""),
        "{card}"
    );
    assert!(
        card.contains("- LoRA rank: 8\n- Trained modules: attn=True, mlp=True, unembed=False"),
        "{card}"
    );

    // The export never writes into the checkpoint directory.
    let local = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
    assert_eq!(local, r#"{"r": 8, "peft_type": "LORA"}"#);
    assert!(!dir.join("README.md").exists());
    cleanup(&dir);
}

#[test]
fn pushing_a_different_checkpoint_into_the_repo_is_refused_and_the_same_one_is_not() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let dir = checkpoint_dir("conflict");
    push_to_hub(
        &dir,
        &options(&server, PATH_A).with_repo_id("local-user/shared"),
    )
    .unwrap();

    let err = push_to_hub(
        &dir,
        &options(&server, PATH_B).with_repo_id("local-user/shared"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(
        text.contains("different Tinker checkpoint")
            && text.contains(PATH_A)
            && text.contains(PATH_B),
        "{text}"
    );
    let repo = &repos(&server)["local-user/shared"];
    assert_eq!(
        repo["commits"].as_array().unwrap().len(),
        1,
        "nothing was committed"
    );

    // Pushing the same checkpoint again reuses the repository.
    let again = push_to_hub(
        &dir,
        &options(&server, PATH_A).with_repo_id("local-user/shared"),
    )
    .unwrap();
    assert_eq!(again.repo_id, "local-user/shared");
    assert_eq!(
        repos(&server)["local-user/shared"]["commits"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    cleanup(&dir);
}

#[test]
fn without_a_repo_the_destination_is_derived_from_the_run_and_checkpoint() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let dir = checkpoint_dir("derived");
    let report = push_to_hub(&dir, &options(&server, PATH_A).with_public(true)).unwrap();
    assert_eq!(report.repo_id, "local-user/tinker-Qwen3-8B-run-a");
    assert_eq!(report.revision, "weights-final");
    let repo = &repos(&server)["local-user/tinker-Qwen3-8B-run-a"];
    assert_eq!(repo["private"], false);
    assert!(repo["branches"]["weights-final"]["adapter_model.safetensors"].is_object());
    assert_eq!(repo["commits"][0]["revision"], "weights-final");
    cleanup(&dir);
}

#[test]
fn an_invalid_token_or_a_directory_without_an_adapter_uploads_nothing() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let dir = checkpoint_dir("invalid");
    let err = push_to_hub(
        &dir,
        &options(&server, PATH_A).with_token("not-a-hub-token"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("Invalid Hugging Face token"),
        "{err}"
    );

    std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
    let err = push_to_hub(&dir, &options(&server, PATH_A).with_repo_id("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("PEFT adapter"), "{err}");
    assert!(
        repos(&server).get("local-user/x").is_none(),
        "no repository was created"
    );
    cleanup(&dir);
}

#[test]
fn large_weights_go_up_in_parts_when_the_hub_asks_for_a_multipart_transfer() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    // The Hub stand-in splits objects above 10 bytes into 10-byte parts.
    let request = http::Request::post(format!("{}/_hub/_admin/lfs", server.url()))
        .body(Bytes::from_static(br#"{"multipart_chunk_size": 10}"#))
        .unwrap();
    assert_eq!(
        UreqTransport::new()
            .send(request, Timeouts::default())
            .unwrap()
            .head
            .status,
        200
    );
    let dir = checkpoint_dir("multipart");
    let weights: Vec<u8> = (0..=255u8).cycle().take(95).collect(); // 10 parts, the last one short
    std::fs::write(dir.join("adapter_model.safetensors"), &weights).unwrap();

    let report = push_to_hub(&dir, &options(&server, PATH_A).with_repo_id("parts")).unwrap();
    assert_eq!(report.lfs_files, ["adapter_model.safetensors"]);
    let uploaded = get(
        &server,
        "/local-user/parts/resolve/main/adapter_model.safetensors",
    )
    .1;
    assert_eq!(uploaded, weights, "the parts were assembled in order");
    cleanup(&dir);
}

#[test]
fn a_pull_request_leaves_the_branch_untouched() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let dir = checkpoint_dir("pr");
    let mut opts = options(&server, PATH_A).with_repo_id("reviewed");
    opts.create_pr = true;
    let report = push_to_hub(&dir, &opts).unwrap();
    assert!(report.pull_request_url.is_some(), "{report:?}");
    let repo = &repos(&server)["local-user/reviewed"];
    assert_eq!(
        repo["branches"]["main"],
        serde_json::json!({}),
        "main holds nothing yet"
    );
    assert!(repo["branches"]["refs/pr/1"]["adapter_config.json"].is_object());
    cleanup(&dir);
}
