//! The local half of an export: what the checkpoint directory must hold, the files to upload
//! (the adapter config patched, a model card added) and where they go. The directory itself
//! is never modified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tinker_core::path::TinkerPath;
use tinker_core::types::WeightsInfoResponse;
use tinker_core::{Error, Result};

/// The PEFT adapter's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// Adapter weights, either of which must be present.
pub const ADAPTER_WEIGHTS: [&str; 2] = ["adapter_model.safetensors", "adapter_model.bin"];
/// The marker file Tinker writes into archives; never uploaded unless allow patterns ask.
pub const COMPLETE_MARKER: &str = "checkpoint_complete";
/// The model card's file name.
pub const MODEL_CARD: &str = "README.md";

/// One file to upload: its path in the repository and where its bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A file of the checkpoint directory, uploaded as is.
    Disk(PathBuf),
    /// Bytes made by the export (the patched adapter config, the model card).
    Made(Vec<u8>),
}

/// Checks the directory holds a PEFT adapter.
pub(crate) fn validate(dir: &Path) -> Result<()> {
    let has = |name: &str| dir.join(name).is_file();
    if !dir.is_dir() {
        return Err(Error::invalid(
            dir.display().to_string(),
            "not a directory (pass the extracted checkpoint)",
        ));
    }
    if !has(ADAPTER_CONFIG) || !ADAPTER_WEIGHTS.iter().any(|w| has(w)) {
        return Err(Error::invalid(
            dir.display().to_string(),
            "the checkpoint does not contain a PEFT adapter: expected adapter_config.json and \
             adapter_model.safetensors (or adapter_model.bin); encrypted (.age) external weights \
             cannot be uploaded",
        ));
    }
    Ok(())
}

/// The adapter config with `base_model_name_or_path` set to `base_model` when it is not a
/// string; `None` when the file needs no change (or is not a JSON object, which is uploaded as
/// is, like the SDK does). Keys sorted, two-space indent, final newline.
pub(crate) fn patched_adapter_config(original: &[u8], base_model: &str) -> Option<Vec<u8>> {
    let serde_json::Value::Object(map) = serde_json::from_slice(original).ok()? else {
        return None;
    };
    if map
        .get("base_model_name_or_path")
        .is_some_and(|v| v.is_string())
    {
        return None;
    }
    let mut sorted: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
    sorted.insert("base_model_name_or_path".into(), base_model.into());
    let mut text = serde_json::to_string_pretty(&sorted).ok()?;
    text.push('\n');
    Some(text.into_bytes())
}

/// Replaces everything outside `[A-Za-z0-9_.-]` with `-`, collapses runs of `-` and trims
/// `-`, `_`, `.` and spaces from both ends (the SDK's repo-name rule).
pub(crate) fn sanitize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches(|c| matches!(c, '-' | '_' | '.' | ' '))
        .to_owned()
}

/// The repository and revision when the user named no repository:
/// `tinker-<base model's last segment, or "adapter">-<run id>` at the checkpoint id.
pub(crate) fn derived_destination(path: &TinkerPath, base_model: &str) -> (String, String) {
    let short = if base_model == "unknown" {
        "adapter"
    } else {
        base_model.rsplit('/').next().unwrap_or(base_model)
    };
    (
        sanitize(&format!("tinker-{short}-{}", path.training_run_id())),
        sanitize(&path.checkpoint_id().replace('/', "-")),
    )
}

/// The model card: YAML front matter (base model, `library_name: peft`, tags, the tinker
/// path), a usage snippet, the source path and the adapter's details.
pub(crate) fn model_card(
    repo_id: &str,
    tinker_path: &str,
    base_model: &str,
    info: Option<&WeightsInfoResponse>,
) -> String {
    let mut tags = vec!["tinker".to_owned(), "peft".into(), "lora".into()];
    if base_model != "unknown" {
        tags.push(format!("base_model:adapter:{base_model}"));
    }
    let mut lines = vec![
        "---".to_owned(),
        format!("base_model: {base_model}"),
        "library_name: peft".into(),
        "tags:".into(),
    ];
    lines.extend(tags.iter().map(|t| format!("- {t}")));
    lines.push(format!("tinker_path: {tinker_path}"));
    for l in [
        "---",
        "",
        "# Tinker LoRA Adapter",
        "",
        "This repository contains a LoRA adapter exported from Tinker.",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "",
    ] {
        lines.push(l.to_owned());
    }
    lines.push(format!("adapter_id = \"{repo_id}\""));
    lines.push(format!("base_model = \"{base_model}\""));
    for l in [
        "",
        "model = AutoModelForCausalLM.from_pretrained(adapter_id, device_map=\"auto\")",
        "```",
        "",
        "## Source",
        "",
        "```",
    ] {
        lines.push(l.to_owned());
    }
    lines.push(tinker_path.to_owned());
    lines.extend(["```", "", "## Details", ""].map(str::to_owned));
    lines.push(format!("- Base model: {base_model}"));
    if let Some(info) = info {
        if let Some(rank) = info.lora_rank {
            lines.push(format!("- LoRA rank: {rank}"));
        }
        if info.train_attn.is_some() || info.train_mlp.is_some() || info.train_unembed.is_some() {
            let flag = |f: Option<bool>| match f {
                Some(true) => "True",
                Some(false) => "False",
                None => "None",
            };
            lines.push(format!(
                "- Trained modules: attn={}, mlp={}, unembed={}",
                flag(info.train_attn),
                flag(info.train_mlp),
                flag(info.train_unembed)
            ));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

/// The first `tinker://…` path in a model card (up to whitespace or a backquote).
pub(crate) fn tinker_path_in(card: &str) -> Option<&str> {
    let start = card.find("tinker://")?;
    let rest = &card[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '`')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Every regular file under `dir` (symbolic links and `.git/` skipped), as `/`-separated paths
/// relative to `dir`, sorted.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), dir.to_owned())];
    while let Some((prefix, folder)) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| io_error(&folder, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&folder, e))?;
            let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if kind.is_dir() && name != ".git" {
                pending.push((rel, entry.path()));
            } else if kind.is_file() {
                out.push((rel, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` passes the allow / ignore patterns (globs: `*` any run of non-`/`
/// characters, `**` anything, `?` one character; a pattern matches the relative path or the
/// file name).
pub(crate) fn selected(path: &str, allow: &[String], ignore: &[String]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let matches =
        |p: &String| glob(p.as_bytes(), path.as_bytes()) || glob(p.as_bytes(), name.as_bytes());
    (allow.is_empty() || allow.iter().any(matches)) && !ignore.iter().any(matches)
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob(rest, &text[i..])),
        [b'?', rest @ ..] => !text.is_empty() && text[0] != b'/' && glob(rest, &text[1..]),
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::invalid(path.display().to_string(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_sanitised_like_the_sdk_does() {
        assert_eq!(
            sanitize("tinker-Qwen3-8B-sess:train:0"),
            "tinker-Qwen3-8B-sess-train-0"
        );
        assert_eq!(sanitize("--a  b//c.."), "a-b-c");
        let path = TinkerPath::parse("tinker://run-7/weights/step-10").unwrap();
        let (repo, rev) = derived_destination(&path, "Qwen/Qwen3-8B");
        assert_eq!(repo, "tinker-Qwen3-8B-run-7");
        assert_eq!(rev, "weights-step-10");
        assert_eq!(
            derived_destination(&path, "unknown").0,
            "tinker-adapter-run-7"
        );
    }

    #[test]
    fn the_adapter_config_gets_a_base_model_only_when_it_lacks_one() {
        let patched = patched_adapter_config(
            br#"{"r": 8, "base_model_name_or_path": null}"#,
            "Qwen/Qwen3-8B",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(patched).unwrap(),
            "{\n  \"base_model_name_or_path\": \"Qwen/Qwen3-8B\",\n  \"r\": 8\n}\n"
        );
        assert_eq!(
            patched_adapter_config(br#"{"base_model_name_or_path": "x"}"#, "y"),
            None
        );
        assert_eq!(patched_adapter_config(b"not json", "y"), None);
    }

    #[test]
    fn globs_match_paths_or_file_names() {
        let s = |v: &[&str]| v.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert!(selected(
            "adapter_model.safetensors",
            &s(&["*.safetensors"]),
            &[]
        ));
        assert!(
            selected("sub/dir/a.json", &s(&["*.json"]), &[]),
            "by file name"
        );
        assert!(
            !selected("sub/a.json", &s(&["sub*json"]), &[]),
            "* stops at /"
        );
        assert!(selected("sub/a.json", &s(&["sub/**"]), &[]));
        assert!(!selected(
            "checkpoint_complete",
            &[],
            &s(&["checkpoint_complete"])
        ));
        assert!(selected("README.md", &[], &s(&["*.bin"])));
    }

    #[test]
    fn the_checkpoint_path_is_found_in_a_model_card() {
        let card = model_card("u/r", "tinker://run-1/weights/final", "Qwen/Qwen3-8B", None);
        assert_eq!(tinker_path_in(&card), Some("tinker://run-1/weights/final"));
        assert!(card.contains("- base_model:adapter:Qwen/Qwen3-8B"));
        assert_eq!(tinker_path_in("no path here"), None);
    }
}
