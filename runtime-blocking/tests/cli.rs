//! The `tinker` binary against the local server: every command in both output formats, the exit
//! codes scripts rely on (4, "unreachable", within --timeout), a multi-delete with one failure,
//! a 200 MB archive download with flat memory that survives a reset connection, the 0.38 export
//! download and its clean-up, archives that try to escape their folder, `push-hf` to the Hub
//! stand-in, trace export polling, billing CSV, and the stored login under a temporary HOME.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tinker_blocking::download::{
    download_checkpoint, extract_archive_safely, DownloadError, DownloadOptions, ProgressMode,
};
use tinker_blocking::types::{FinishReason, LoraConfig, ModelInput, SamplingParams};
use tinker_blocking::Settings;
use tinker_testkit::server::{BackgroundServer, Fault, FaultRule, LocalServer, LocalServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_tinker");
const MODEL: &str = "Qwen/Qwen3-8B";

/// A local server with one training run holding two training checkpoints and one sampler
/// checkpoint, created through the SDK as a user would.
struct Account {
    server: BackgroundServer,
    key: String,
    run_id: String,
    session_id: String,
    /// `tinker://…/weights/step-1`, `…/weights/step-2`.
    weights: Vec<String>,
    sampler: String,
}

impl Account {
    fn new(config: LocalServerConfig) -> Account {
        let server = LocalServer::start_background(config).expect("start the local server");
        let key = server.api_key();
        let settings = Settings::default()
            .with_api_key(key.clone())
            .expect("a valid key")
            .with_base_url(server.url())
            .with_telemetry(false);
        let service = tinker_blocking::connect(settings).expect("connect");
        let training = service
            .create_lora_training_client(MODEL, LoraConfig::new(8))
            .expect("create a training run");
        let weights: Vec<String> = ["step-1", "step-2"]
            .iter()
            .map(|name| training.save_state(name).unwrap().result().unwrap().path)
            .collect();
        let sampler = training
            .save_weights_for_sampler("sampler-1")
            .unwrap()
            .result()
            .unwrap()
            .path
            .expect("a named sampler save has a path");
        // One sample, so the account has billable usage.
        let sampling = training.create_sampling_client(&sampler).unwrap();
        let params = SamplingParams {
            max_tokens: Some(2),
            ..SamplingParams::default()
        };
        sampling
            .sample(ModelInput::from_tokens(vec![1, 2, 3]), 1, params)
            .expect("sample");
        let run_id = training.model_id().to_owned();
        let session_id = service.session_id().unwrap();
        service.close(FinishReason::Success).unwrap();
        Account {
            server,
            key,
            run_id,
            session_id,
            weights,
            sampler,
        }
    }

    /// The binary with this account's key and URL in the environment (and nothing else of ours).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = tinker(args);
        cmd.env("TINKER_API_KEY", &self.key)
            .env("TINKER_BASE_URL", self.server.url());
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::of(self.command(args).output().expect("run tinker"))
    }

    /// Runs with `--format json`, expects success, returns the document.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        assert_eq!(run.code, 0, "tinker {args:?} failed: {}", run.stderr);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("tinker {args:?} printed no JSON ({e}): {}", run.stdout))
    }

    /// Runs in table format, expects success, returns stdout.
    fn table(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "tinker {args:?} failed: {}", run.stderr);
        run.stdout
    }
}

/// The binary with a clean environment: no inherited TINKER_* variables, stdin closed.
fn tinker(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("TINKER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TINKER_TELEMETRY", "0");
    cmd
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tinker-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn paths_of(list: &Value) -> Vec<String> {
    list["checkpoints"]
        .as_array()
        .expect("a checkpoints array")
        .iter()
        .map(|c| c["tinker_path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn read_commands_answer_in_table_and_in_json() {
    let acct = Account::new(LocalServerConfig::all_flags());

    // run list / run info
    let runs = acct.json(&["run", "list"]);
    assert_eq!(runs["runs"][0]["training_run_id"], acct.run_id.as_str());
    let table = acct.table(&["run", "list", "--columns", "id,model,checkpoint"]);
    assert!(table.starts_with("1 training run\n"), "{table}");
    assert!(
        table.contains("Run ID") && table.contains("Last Checkpoint"),
        "{table}"
    );
    assert!(
        table.contains(&acct.run_id) && table.contains(MODEL),
        "{table}"
    );
    let info = acct.json(&["run", "info", &acct.run_id]);
    assert_eq!(info["base_model"], MODEL);
    assert_eq!(info["lora_rank"], 8);
    let table = acct.table(&["run", "info", &acct.run_id]);
    assert!(
        table.contains("LoRA") && table.contains("Yes (Rank 8)"),
        "{table}"
    );

    // checkpoint list (all runs, paged, and one run) / checkpoint info
    let all = paths_of(&acct.json(&["checkpoint", "list"]));
    for p in acct.weights.iter().chain([&acct.sampler]) {
        assert!(all.contains(p), "{p} missing from {all:?}");
    }
    let one = paths_of(&acct.json(&["checkpoint", "list", "--limit", "1"]));
    assert_eq!(one.len(), 1, "--limit bounds the listing");
    let table = acct.table(&["checkpoint", "list", "--limit", "1"]);
    assert!(table.contains("more not shown, use --limit"), "{table}");
    let of_run = acct.json(&["checkpoint", "list", "--run-id", &acct.run_id]);
    assert_eq!(of_run["run_id"], acct.run_id.as_str());
    assert_eq!(paths_of(&of_run).len(), 3);
    let table = acct.table(&["checkpoint", "list", "--run-id", &acct.run_id]);
    for column in [
        "Checkpoint ID",
        "Type",
        "Size",
        "Public",
        "Created",
        "Expires",
        "Path",
    ] {
        assert!(table.contains(column), "{column} missing: {table}");
    }
    let info = acct.json(&["checkpoint", "info", &acct.weights[0]]);
    assert_eq!(info["tinker_path"], acct.weights[0].as_str());
    assert_eq!(info["checkpoint_type"], "training");
    assert_eq!(info["is_lora"], true);
    let table = acct.table(&["checkpoint", "info", &acct.weights[0]]);
    assert!(
        table.contains("Training Run ID") && table.contains(&acct.run_id),
        "{table}"
    );

    // session list / session info
    let sessions = acct.json(&["session", "list"]);
    assert_eq!(sessions["sessions"][0], acct.session_id.as_str());
    assert!(acct.table(&["session", "list"]).contains(&acct.session_id));
    let session = acct.json(&["session", "info", &acct.session_id]);
    assert_eq!(session["training_run_ids"][0], acct.run_id.as_str());
    assert!(acct
        .table(&["session", "info", &acct.session_id])
        .contains("Training Runs"));

    // model list (with and without a filter)
    let models = acct.json(&["model", "list"]);
    assert!(models["models"].as_array().unwrap().len() >= 2);
    let llama = acct.json(&["model", "list", "LLAMA"]);
    assert_eq!(llama["models"].as_array().unwrap().len(), 1);
    let table = acct.table(&["model", "list"]);
    assert!(
        table.contains("Max Context") && table.contains(MODEL),
        "{table}"
    );
    let none = acct.run(&["model", "list", "no-such-model"]);
    assert_eq!(none.code, 1, "{none:?}");

    // auth whoami / auth status
    let me = acct.json(&["auth", "whoami"]);
    assert_eq!(me["user_urn"], "tml:org_user:local-user");
    assert!(acct.table(&["auth", "whoami"]).contains("Organization"));
    let status = acct.json(&["auth", "status"]);
    assert_eq!(status["accessible"], true);
    assert!(acct
        .table(&["auth", "status"])
        .contains("Tinker accessible: yes"));

    // billing usage over the last hours (the training above was billed)
    let (from, to) = billing_window();
    let usage = acct.json(&["billing", "usage", &from, &to]);
    let rows = usage["data"].as_array().expect("usage rows");
    assert!(!rows.is_empty(), "{usage}");
    let table = acct.table(&["billing", "usage", &from, &to]);
    assert!(
        table.contains("hourly usage row(s)") && table.contains("session_id"),
        "{table}"
    );

    // version
    let version = acct.json(&["version"]);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert!(acct.table(&["version"]).starts_with("tinker "));
}

#[test]
fn publish_unpublish_and_ttl_change_what_info_reports() {
    let acct = Account::new(LocalServerConfig::default());
    let path = acct.weights[0].as_str();
    let public = |a: &Account| a.json(&["checkpoint", "info", path])["public"].clone();

    assert_eq!(
        acct.json(&["checkpoint", "publish", path])["action"],
        "publish"
    );
    assert_eq!(public(&acct), true);
    assert!(acct
        .table(&["checkpoint", "unpublish", path])
        .contains(&format!("Unpublished {path}")));
    assert_eq!(public(&acct), false);

    acct.json(&["checkpoint", "set-ttl", path, "--ttl", "7200"]);
    let info = acct.json(&["checkpoint", "info", path]);
    assert!(info["expires_at"].is_string(), "{info}");
    assert!(acct
        .table(&["checkpoint", "set-ttl", path, "--remove"])
        .contains("Removed the expiration"));
    let info = acct.json(&["checkpoint", "info", path]);
    assert!(info["expires_at"].is_null(), "{info}");

    let both = acct.run(&["checkpoint", "set-ttl", path, "--ttl", "7200", "--remove"]);
    assert_eq!(
        both.code, 2,
        "--ttl and --remove together are a usage error"
    );
}

#[test]
fn a_multi_delete_reports_every_path_and_exits_1_when_one_fails() {
    let acct = Account::new(LocalServerConfig::default());
    let missing = format!("tinker://{}/weights/never-saved", acct.run_id);
    let run = acct.run(&[
        "--format",
        "json",
        "checkpoint",
        "delete",
        "--yes",
        &acct.weights[0],
        &missing,
        &acct.weights[1],
    ]);

    assert_eq!(
        run.code, 1,
        "a failed deletion makes the command fail: {run:?}"
    );
    let report: Value = serde_json::from_str(&run.stdout).expect("the JSON report");
    assert_eq!(report["deleted_count"], 2);
    assert_eq!(report["deleted"][0], acct.weights[0].as_str());
    assert_eq!(report["deleted"][1], acct.weights[1].as_str());
    assert_eq!(report["failed"][0]["tinker_path"], missing.as_str());
    assert!(
        run.stderr.contains("1 of 3 deletion(s) failed"),
        "{}",
        run.stderr
    );
    // The two real checkpoints are gone, the sampler checkpoint is untouched.
    let left = paths_of(&acct.json(&["checkpoint", "list", "--run-id", &acct.run_id]));
    assert_eq!(left, vec![acct.sampler.clone()]);

    // Table format reports each path on its own line.
    let run = acct.run(&["checkpoint", "delete", "-y", &acct.sampler, &missing]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains(&format!("Deleted {}", acct.sampler)),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("Failed  {missing}")),
        "{}",
        run.stdout
    );
}

#[test]
fn exit_codes_tell_usage_credential_and_server_failures_apart() {
    let acct = Account::new(LocalServerConfig {
        api_keys: vec!["tml-the-right-key".into()],
        ..LocalServerConfig::default()
    });

    // 2: a path not of the tinker:// form, before anything is sent.
    let bad = acct.run(&["checkpoint", "info", "run-1/weights/x"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("tinker://<run-id>/weights/<name>"),
        "{}",
        bad.stderr
    );
    // 2: unknown options, unknown columns, deleting without confirmation from a script.
    assert_eq!(acct.run(&["run", "list", "--bogus"]).code, 2);
    assert_eq!(acct.run(&["run", "list", "--columns", "id,nope"]).code, 2);
    let unconfirmed = acct.run(&["checkpoint", "delete", &acct.weights[0]]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );

    // 3: no key at all names the variable to set; a rejected key says to check it.
    let no_key = Run::of(
        tinker(&["run", "list"])
            .env("TINKER_BASE_URL", acct.server.url())
            .output()
            .unwrap(),
    );
    assert_eq!(no_key.code, 3, "{no_key:?}");
    assert!(
        no_key.stderr.contains("TINKER_API_KEY"),
        "{}",
        no_key.stderr
    );
    let wrong = acct.run(&["--api-key", "tml-wrong", "run", "list"]);
    assert_eq!(wrong.code, 3, "a flag wins over TINKER_API_KEY: {wrong:?}");
    assert!(
        wrong.stderr.contains("Authentication failed"),
        "{}",
        wrong.stderr
    );

    // 1: the server says not found.
    let gone = acct.run(&["run", "info", "no-such-run"]);
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(
        gone.stderr.contains("Resource not found"),
        "{}",
        gone.stderr
    );

    // Precedence: --base-url wins over a TINKER_BASE_URL pointing nowhere.
    let dead = format!("http://{}", tinker_testkit::scripted_http::refused_addr());
    let flag_wins = Run::of(
        tinker(&["--base-url", acct.server.url(), "run", "list"])
            .env("TINKER_API_KEY", "tml-the-right-key")
            .env("TINKER_BASE_URL", &dead)
            .output()
            .unwrap(),
    );
    assert_eq!(flag_wins.code, 0, "{flag_wins:?}");
}

/// Peak resident memory of the largest child this process has waited for, in bytes.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    // Linux reports kilobytes.
    usage.ru_maxrss as u64 * 1024
}

const BIG: u64 = 200 * 1024 * 1024;

#[test]
fn a_200_mb_download_keeps_memory_flat_and_resumes_after_a_reset() {
    let acct = Account::new(LocalServerConfig {
        archive_padding_bytes: BIG,
        faults: vec![FaultRule::once("_archives/*", Fault::ResetMidBody)],
        ..LocalServerConfig::default()
    });
    let out = TempDir::new("big-download");
    let path = acct.weights[1].as_str();

    let run = acct.run(&[
        "--format",
        "json",
        "checkpoint",
        "download",
        path,
        "--route",
        "archive",
        "--output",
        out.0.to_str().unwrap(),
    ]);
    let peak = children_max_rss();

    assert_eq!(run.code, 0, "download failed: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["route"], "archive");
    assert_eq!(report["resumes"], 1, "the injected reset was resumed once");
    assert!(report["file_size_bytes"].as_u64().unwrap() > BIG);
    let dest = PathBuf::from(report["destination"].as_str().unwrap());
    assert_eq!(
        dest,
        out.0.join(path["tinker://".len()..].replace('/', "_"))
    );
    let padding = dest.join("padding.bin");
    assert_eq!(std::fs::metadata(&padding).unwrap().len(), BIG);
    assert_pattern_at(&padding, &[0, BIG / 2 - 3, BIG / 2 + 7, BIG - 5]);
    assert!(dest.join("adapter_config.json").is_file());
    assert!(
        std::fs::read_dir(&out.0).unwrap().count() == 1,
        "the partial archive and scratch folder are gone"
    );
    assert!(
        peak < BIG / 4,
        "peak RSS of the download was {} MB for a {} MB archive",
        peak >> 20,
        BIG >> 20
    );

    // The destination exists now: refused without --force, replaced with it.
    let again = acct.run(&[
        "checkpoint",
        "download",
        path,
        "--route",
        "archive",
        "-o",
        out.0.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
}

/// The bytes of the server's padding member at `offsets` follow its pattern (`i % 251`).
fn assert_pattern_at(file: &Path, offsets: &[u64]) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(file).unwrap();
    for &at in offsets {
        let mut b = [0u8; 4];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        let want: Vec<u8> = (at..at + 4).map(|i| (i % 251) as u8).collect();
        assert_eq!(b.to_vec(), want, "bytes at offset {at}");
    }
}

#[test]
fn the_library_download_waits_while_the_archive_is_being_built() {
    let acct = Account::new(LocalServerConfig {
        archive_build_ms: 1500,
        archive_redirect: false,
        ..LocalServerConfig::default()
    });
    let out = TempDir::new("building");
    let settings = Settings::default()
        .with_api_key(acct.key.clone())
        .unwrap()
        .with_base_url(acct.server.url())
        .with_telemetry(false);
    let rest = tinker_blocking::connect(settings)
        .unwrap()
        .create_rest_client();
    let options = DownloadOptions {
        archive_retry_delay: std::time::Duration::from_millis(300),
        archive_attempts: 30,
        progress: ProgressMode::Never,
        ..DownloadOptions::default()
    };

    let report = download_checkpoint(&rest, &acct.weights[0], &out.0, &options).unwrap();

    assert_eq!(report.resumes, 0);
    assert!(report
        .files
        .iter()
        .any(|f| f == Path::new("adapter_config.json")));
    let archive_calls = acct
        .server
        .recording()
        .iter()
        .filter(|e| e.path.ends_with("/archive"))
        .count();
    assert!(
        archive_calls > 1,
        "the 503 was retried ({archive_calls} calls)"
    );

    let err = download_checkpoint(&rest, "weights/step-1", &out.0, &options).unwrap_err();
    assert!(matches!(err, DownloadError::InvalidPath { .. }), "{err}");
}

/// A one-entry tar whose header is written by hand, so names the tar crate would refuse to
/// write (`../x`, `/etc/x`) can be tested.
fn hostile_tar(name: &str, kind: u8, link: &str, body: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn archives_whose_entries_escape_the_target_folder_are_refused() {
    let dir = TempDir::new("hostile");
    let dest = dir.0.join("inside");
    let cases = [
        ("../escaped.txt", b'0', "", "contains `..`"),
        ("a/../../escaped.txt", b'0', "", "contains `..`"),
        ("/tmp/escaped-absolute.txt", b'0', "", "is absolute"),
        ("link", b'2', "../../etc", "link target"),
        ("abs-link", b'2', "/etc/passwd", "link target"),
        ("hard", b'1', "../outside", "link target"),
        ("fifo", b'6', "", "not extracted"),
    ];
    for (name, kind, link, why) in cases {
        let archive = dir.0.join("hostile.tar");
        std::fs::write(&archive, hostile_tar(name, kind, link, b"pwned")).unwrap();

        let err = extract_archive_safely(&archive, &dest).unwrap_err();

        assert!(
            matches!(&err, DownloadError::UnsafeEntry { entry, reason } if entry == name && reason.contains(why)),
            "{name}: {err}"
        );
    }
    assert!(!dir.0.join("escaped.txt").exists());
    assert!(!Path::new("/tmp/escaped-absolute.txt").exists());
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing was written"
    );

    // A well-formed archive with a link that stays inside extracts.
    let archive = dir.0.join("fine.tar");
    std::fs::write(&archive, hostile_tar("sub/data.bin", b'0', "", b"ok")).unwrap();
    assert_eq!(
        extract_archive_safely(&archive, &dest).unwrap(),
        vec![PathBuf::from("sub/data.bin")]
    );
    assert_eq!(std::fs::read(dest.join("sub/data.bin")).unwrap(), b"ok");
}

const HF_TOKEN: &str = "hf_local_test_token";

/// A GET on the local server's Hub stand-in; returns the status and the body.
fn hub_get(acct: &Account, path: &str) -> (u16, Vec<u8>) {
    use tinker_blocking::core::io::{BlockingHttp, Timeouts};
    let request = http::Request::get(format!("{}/_hub{path}", acct.server.url()))
        .header("authorization", format!("Bearer {HF_TOKEN}"))
        .body(bytes::Bytes::new())
        .unwrap();
    let mut response = tinker_blocking::UreqTransport::new()
        .send(request, Timeouts::default())
        .unwrap();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.body, &mut body).unwrap();
    (response.head.status.as_u16(), body)
}

#[test]
fn push_hf_downloads_the_checkpoint_and_uploads_it_with_a_model_card() {
    let acct = Account::new(LocalServerConfig::default());
    // The child's temp dir, to see the scratch download is cleaned up.
    let tmp = TempDir::new("push-hf-tmp");
    let path = acct.weights[1].as_str();
    let push = |args: &[&str]| {
        let mut all = vec!["--format", "json", "checkpoint", "push-hf", path];
        all.extend_from_slice(args);
        Run::of(
            acct.command(&all)
                .env("HF_ENDPOINT", format!("{}/_hub", acct.server.url()))
                .env("HF_TOKEN", HF_TOKEN)
                .env("TMPDIR", &tmp.0)
                .output()
                .unwrap(),
        )
    };

    let run = push(&["--repo", "local-user/x", "--commit-message", "first export"]);

    assert_eq!(run.code, 0, "push-hf failed: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["repo_id"], "local-user/x");
    assert_eq!(report["revision"], "main");
    assert_eq!(
        report["files"],
        serde_json::json!([
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "toy_model.snapshot"
        ])
    );
    let repos: Value = serde_json::from_slice(&hub_get(&acct, "/_admin/repos").1).unwrap();
    let repo = &repos["local-user/x"];
    assert_eq!(repo["private"], true, "private without --public");
    assert_eq!(repo["commits"][0]["summary"], "first export");
    let main = repo["branches"]["main"].as_object().unwrap();
    assert_eq!(
        main.keys().collect::<Vec<_>>(),
        [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "toy_model.snapshot"
        ]
    );
    let (status, card) = hub_get(&acct, "/local-user/x/resolve/main/README.md");
    assert_eq!(status, 200);
    let card = String::from_utf8(card).unwrap();
    assert!(card.contains(&format!("base_model: {MODEL}")), "{card}");
    assert!(card.contains(&format!("tinker_path: {path}")), "{card}");
    assert!(
        card.contains("- LoRA rank: 8"),
        "weights_info reached the card: {card}"
    );
    assert_eq!(
        std::fs::read_dir(&tmp.0).unwrap().count(),
        0,
        "the scratch download was removed"
    );

    // A namespace the token may not write to: a credentials failure, exit 3, naming the Hub.
    let refused = push(&["--repo", "someone-else/x"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("Hugging Face"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 0);
}

#[test]
fn help_lists_every_command_family_and_the_exit_codes() {
    let run = Run::of(tinker(&["--help"]).output().unwrap());
    assert_eq!(run.code, 0);
    for word in [
        "run",
        "checkpoint",
        "session",
        "model",
        "auth",
        "billing",
        "version",
    ] {
        assert!(
            run.stdout.contains(&format!("  {word}")),
            "{word}: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("Exit codes:") && run.stdout.contains("TINKER_API_KEY"));
    let sub = Run::of(tinker(&["checkpoint", "--help"]).output().unwrap());
    for word in [
        "list",
        "info",
        "publish",
        "unpublish",
        "set-ttl",
        "delete",
        "download",
        "push-hf",
    ] {
        assert!(sub.stdout.contains(word), "{word}: {}", sub.stdout);
    }
    for (family, commands) in [
        ("auth", &["login", "logout", "whoami", "status"][..]),
        ("session", &["list", "info", "export-trace"][..]),
        ("billing", &["usage", "checkpoint-storage"][..]),
    ] {
        let sub = Run::of(tinker(&[family, "--help"]).output().unwrap());
        for word in commands {
            assert!(sub.stdout.contains(word), "{family} {word}: {}", sub.stdout);
        }
    }
    let download = Run::of(
        tinker(&["checkpoint", "download", "--help"])
            .output()
            .unwrap(),
    );
    assert!(download.stdout.contains("--route"), "{}", download.stdout);
}

#[test]
fn an_unreachable_server_exits_4_within_the_timeout_and_names_the_url_to_check() {
    let dead = format!("http://{}", tinker_testkit::scripted_http::refused_addr());
    let started = std::time::Instant::now();

    let run = Run::of(
        tinker(&["--timeout", "2", "run", "list"])
            .env("TINKER_API_KEY", "tml-any-key")
            .env("TINKER_BASE_URL", &dead)
            .output()
            .unwrap(),
    );

    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("TINKER_BASE_URL"), "{}", run.stderr);
    // Not a speed check: without the bound the start-up retries for about five minutes.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "--timeout bounds the start-up requests"
    );
}

#[test]
fn export_trace_polls_until_the_export_is_ready_then_writes_it() {
    let acct = Account::new(LocalServerConfig::default());
    let id = acct.session_id.as_str();
    let endpoint = format!("sessions/{id}/trace_export");
    let pending = Fault::Status {
        status: 200,
        body: Some(serde_json::json!({"status": "pending"})),
        headers: Default::default(),
    };
    // The export is "being built" for two checks, then ready.
    acct.server
        .add_faults(vec![FaultRule::times(&endpoint, 2, pending)]);
    let dir = TempDir::new("trace");
    let file = dir.0.join("trace.jsonl");

    let report = acct.json(&[
        "session",
        "export-trace",
        id,
        "--output",
        file.to_str().unwrap(),
        "--poll-interval",
        "0.05",
    ]);

    let checks = acct
        .server
        .recording()
        .iter()
        .filter(|e| e.path.ends_with("/trace_export"))
        .count();
    assert_eq!(checks, 3, "two pending answers, then ready");
    let trace = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["path"].as_str().unwrap_or("").contains("create_model")),
        "the session's requests are in the trace"
    );
    assert_eq!(report["size_bytes"], trace.len() as u64);

    // Without --output the trace itself is the standard output.
    let run = acct.run(&["session", "export-trace", id]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.lines().count() >= lines.len(), "{}", run.stdout);
    assert!(run.stdout.contains("create_model"));

    // A failed export exits 1 with the server's reason.
    let failed = Fault::Status {
        status: 200,
        body: Some(serde_json::json!({"status": "failed", "error": "trace store unavailable"})),
        headers: Default::default(),
    };
    acct.server
        .add_faults(vec![FaultRule::once(&endpoint, failed)]);
    let run = acct.run(&["session", "export-trace", id]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("trace store unavailable"),
        "{}",
        run.stderr
    );
}

#[test]
fn billing_reports_checkpoint_storage_and_usage_as_csv() {
    let acct = Account::new(LocalServerConfig::default());

    let storage = acct.json(&["billing", "checkpoint-storage"]);
    let row = &storage["data"][0];
    assert_eq!(
        row["checkpoint_count"], 3,
        "two states and one sampler save"
    );
    assert!(row["size_bytes"].as_u64().unwrap() > 0, "{storage}");
    let table = acct.table(&["billing", "checkpoint-storage", "--project-id", "p-1"]);
    assert!(
        table.contains("Checkpoints") && table.contains("Est. Monthly Cost"),
        "{table}"
    );
    let asked = acct.server.recording();
    assert!(
        asked
            .iter()
            .any(|e| e.path.ends_with("billing/usage/checkpoints/current")
                && e.query == "project_id=p-1"),
        "--project-id is sent as the query"
    );

    let (from, to) = billing_window();
    let rows = acct.json(&["billing", "usage", &from, &to])["data"]
        .as_array()
        .unwrap()
        .len();
    let csv = acct.table(&["billing", "usage", &from, &to, "--csv"]);
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        &header[..4],
        ["bucket_start", "bucket_end", "event_type", "base_model"]
    );
    assert_eq!(lines.len(), rows + 1, "a header and one line per usage row");
    let session_col = header.iter().position(|h| *h == "session_id").unwrap();
    assert!(lines[1..]
        .iter()
        .all(|l| l.split(',').nth(session_col) == Some(acct.session_id.as_str())));

    let dir = TempDir::new("csv");
    let file = dir.0.join("usage.csv");
    let report = acct.json(&[
        "billing",
        "usage",
        &from,
        &to,
        "--csv",
        file.to_str().unwrap(),
    ]);
    assert_eq!(report["rows"], rows);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), csv);
}

/// Mode bits of a file or folder.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn login_stores_the_key_as_the_default_credential_and_logout_forgets_it() {
    let acct = Account::new(LocalServerConfig {
        api_keys: vec!["tml-the-right-key".into(), "tml-generated-key".into()],
        ..LocalServerConfig::default()
    });
    let home = TempDir::new("home");
    // The binary with a temp HOME and no key in the environment.
    let cli = |args: &[&str]| {
        let mut cmd = tinker(args);
        cmd.env("HOME", &home.0)
            .env("TINKER_BASE_URL", acct.server.url());
        cmd
    };
    let run = |args: &[&str]| Run::of(cli(args).output().unwrap());
    let file = home.0.join(".tinker/credentials.json");

    // A rejected key is refused and nothing is stored.
    let wrong = run(&["auth", "login", "--key", "tml-wrong"]);
    assert_eq!(wrong.code, 3, "{wrong:?}");
    assert!(
        wrong.stderr.contains("Invalid API key"),
        "the server's detail: {}",
        wrong.stderr
    );
    assert!(!file.exists());

    // The key piped on stdin (not a terminal) is checked, then stored 0600 in a 0700 folder.
    let mut child = cli(&["--format", "json", "auth", "login"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"tml-the-right-key\n").unwrap();
    let login = Run::of(child.wait_with_output().unwrap());
    assert_eq!(login.code, 0, "{login:?}");
    let report: Value = serde_json::from_str(&login.stdout).unwrap();
    assert_eq!(
        report["email"], "dev@localhost",
        "what the server said about the key"
    );
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(file.parent().unwrap()), 0o700);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(stored["version"], 1);
    let id = stored["default"].as_str().expect("a default key id");
    assert_eq!(stored["keys"][id]["type"], "manual");
    assert_eq!(stored["keys"][id]["key"], "tml-the-right-key");
    assert!(stored["keys"][id]["details"]["user_details"]["email"].is_string());
    assert!(acct
        .server
        .recording()
        .iter()
        .any(|e| e.endpoint() == "auth/apikey/me"
            && e.header("x-api-key") == Some("tml-the-right-key")));

    // Without any key in the environment the stored key is used …
    let listed = run(&["run", "list"]);
    assert_eq!(listed.code, 0, "the stored key is a credential: {listed:?}");
    // … but TINKER_API_KEY wins over it, and --api-key over both.
    let env_wins = Run::of(
        cli(&["run", "list"])
            .env("TINKER_API_KEY", "tml-wrong")
            .output()
            .unwrap(),
    );
    assert_eq!(env_wins.code, 3, "{env_wins:?}");
    let flag_wins = Run::of(
        cli(&["--api-key", "tml-the-right-key", "run", "list"])
            .env("TINKER_API_KEY", "tml-wrong")
            .output()
            .unwrap(),
    );
    assert_eq!(flag_wins.code, 0, "{flag_wins:?}");

    // Logging out forgets a manual key without revoking it.
    let out = run(&["--format", "json", "auth", "logout"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["revoked"],
        false
    );
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(stored["default"].is_null() && stored["keys"].as_object().unwrap().is_empty());
    let no_key = run(&["run", "list"]);
    assert_eq!(no_key.code, 3, "{no_key:?}");
    assert!(
        no_key.stderr.contains("tinker auth login"),
        "{}",
        no_key.stderr
    );
    assert!(!acct.server.recording().iter().any(|e| e.method == "DELETE"));
    assert_eq!(
        run(&["auth", "logout"]).code,
        0,
        "logging out twice is fine"
    );

    // A key the CLI generated (older login flow) is revoked on the server as well.
    std::fs::write(
        &file,
        r#"{"version": 1, "default": "9", "keys": {"9": {"type": "generated", "key": "tml-generated-key", "name": "cli"}}}"#,
    )
    .unwrap();
    assert_eq!(run(&["run", "list"]).code, 0);
    let out = run(&["--format", "json", "auth", "logout"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["revoked"],
        true
    );
    let revoked = Run::of(
        cli(&["run", "list"])
            .env("TINKER_API_KEY", "tml-generated-key")
            .output()
            .unwrap(),
    );
    assert_eq!(revoked.code, 3, "the server revoked the key: {revoked:?}");
}

/// The endpoints of the recorded API requests, without the polling and housekeeping ones.
fn api_calls(acct: &Account) -> Vec<String> {
    acct.server
        .recording()
        .iter()
        .filter(|e| e.path.starts_with("/api/v1/"))
        .map(|e| format!("{} {}", e.method, e.endpoint()))
        .filter(|c| {
            ![
                "retrieve_future",
                "telemetry",
                "session_heartbeat",
                "client/",
                "auth/token",
            ]
            .iter()
            .any(|skip| c.contains(skip))
        })
        .collect()
}

#[test]
fn a_training_checkpoint_downloads_through_a_temporary_export_that_is_cleaned_up() {
    let acct = Account::new(LocalServerConfig::default());
    let out = TempDir::new("export-download");
    let path = acct.weights[0].as_str();
    acct.server.clear_recording();

    let report = acct.json(&[
        "checkpoint",
        "download",
        path,
        "-o",
        out.0.to_str().unwrap(),
    ]);

    assert_eq!(report["route"], "export");
    let dest = out.0.join(path["tinker://".len()..].replace('/', "_"));
    assert_eq!(report["destination"], dest.to_str().unwrap());
    assert_eq!(
        report["files"],
        serde_json::json!([
            "adapter_config.json",
            "adapter_model.safetensors",
            "toy_model.snapshot"
        ])
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(dest.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["base_model_name_or_path"], MODEL);
    assert_eq!(
        std::fs::read_dir(&out.0).unwrap().count(),
        1,
        "no scratch folder is left"
    );
    // The 0.38 sequence: a session, the state loaded into a marked run, exported for an hour,
    // the URLs and a TTL renewal, the export deleted and the session finished.
    let calls = api_calls(&acct);
    let position = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing from {calls:#?}"))
    };
    let order = [
        position("POST create_session"),
        position("POST load_weights"),
        position("POST get_info"),
        position("POST save_weights_external"),
        calls
            .iter()
            .position(|c| {
                c.starts_with("GET training_runs") && c.ends_with("/external_weights_urls")
            })
            .unwrap(),
        calls
            .iter()
            .position(|c| c.starts_with("PUT training_runs") && c.ends_with("/ttl"))
            .unwrap(),
        calls
            .iter()
            .position(|c| c.starts_with("DELETE training_runs"))
            .unwrap(),
        calls
            .iter()
            .position(|c| c.starts_with("POST sessions/") && c.ends_with("/finish"))
            .unwrap(),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{calls:#?}");
    let recording = acct.server.recording();
    let body_of = |endpoint: &str| {
        recording
            .iter()
            .find(|e| e.endpoint() == endpoint)
            .and_then(|e| e.body.clone())
            .unwrap()
    };
    assert_eq!(body_of("load_weights")["path"], path);
    assert_eq!(
        body_of("load_weights")["user_metadata"],
        serde_json::json!({"created_by": "tinker checkpoint download"})
    );
    assert_eq!(body_of("save_weights_external")["ttl_seconds"], 3600);
    let export = recording
        .iter()
        .find(|e| e.method == "DELETE")
        .unwrap()
        .endpoint()
        .to_owned();
    assert!(export.contains("/external_weights/"), "{export}");
    let left = paths_of(&acct.json(&["checkpoint", "list", "--run-id", &acct.run_id]));
    assert_eq!(
        left.len(),
        3,
        "only the account's own checkpoints remain: {left:?}"
    );

    // A sampler checkpoint cannot be downloaded: a usage error before anything is exported.
    acct.server.clear_recording();
    let sampler = acct.run(&[
        "checkpoint",
        "download",
        &acct.sampler,
        "-o",
        out.0.to_str().unwrap(),
    ]);
    assert_eq!(sampler.code, 2, "{sampler:?}");
    assert!(
        sampler
            .stderr
            .contains("sampler checkpoints cannot be downloaded"),
        "{}",
        sampler.stderr
    );
    assert!(!api_calls(&acct)
        .iter()
        .any(|c| c.contains("create_session")));
}

#[test]
fn an_external_export_downloads_from_its_signed_urls_without_a_session() {
    let acct = Account::new(LocalServerConfig::default());
    let settings = Settings::default()
        .with_api_key(acct.key.clone())
        .unwrap()
        .with_base_url(acct.server.url())
        .with_telemetry(false);
    let service = tinker_blocking::connect(settings).unwrap();
    let training = service
        .create_training_client_from_state(&acct.weights[1])
        .unwrap();
    let export = training
        .save_weights_external("shared", None, None)
        .unwrap()
        .result()
        .unwrap()
        .path;
    service.close(FinishReason::Success).unwrap();
    let out = TempDir::new("external-download");
    acct.server.clear_recording();

    let report = acct.json(&[
        "checkpoint",
        "download",
        &export,
        "-o",
        out.0.to_str().unwrap(),
    ]);

    let dest = PathBuf::from(report["destination"].as_str().unwrap());
    assert!(dest.join("adapter_model.safetensors").is_file());
    let total: u64 = [
        "adapter_config.json",
        "adapter_model.safetensors",
        "toy_model.snapshot",
    ]
    .iter()
    .map(|f| std::fs::metadata(dest.join(f)).unwrap().len())
    .sum();
    assert_eq!(report["file_size_bytes"], total);
    let calls = api_calls(&acct);
    assert!(
        calls.iter().all(|c| !c.contains("create_session")
            && !c.starts_with("PUT")
            && !c.starts_with("DELETE")),
        "a user's export is only read, its expiry untouched: {calls:#?}"
    );
    assert!(
        calls.iter().any(|c| c.ends_with("/external_weights_urls")),
        "{calls:#?}"
    );
}

/// A three-hour billing window starting on the hour before the current one, so it holds
/// everything the test just trained.
fn billing_window() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = now - now % 3600 - 3600;
    let ts = |s: i64| {
        tinker_blocking::types::Timestamp::from_unix_seconds(s)
            .as_str()
            .to_owned()
    };
    (ts(start), ts(start + 3 * 3600))
}
