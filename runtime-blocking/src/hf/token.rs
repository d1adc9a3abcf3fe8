//! Which Hugging Face token an export uses (tinkex_features 2.14, step 1).

use std::path::{Path, PathBuf};

use tinker_core::settings::Secret;
use tinker_core::{Error, Result};

/// The first non-blank of: `explicit`, `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, the trimmed
/// contents of the token file (`token_path`, else `HF_TOKEN_PATH`, else `$HF_HOME/token`, where
/// `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`). `env` looks
/// variables up (`None` when unset), so tests need not touch the process environment.
///
/// None found → [`Error::Config`] listing every place checked.
pub fn resolve_token(
    explicit: Option<&str>,
    token_path: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Secret> {
    let blank_to_none =
        |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(t) = blank_to_none(explicit.map(str::to_owned)) {
        return Ok(Secret::new(t));
    }
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Some(t) = blank_to_none(env(var)) {
            return Ok(Secret::new(t));
        }
    }
    let file = token_file(token_path, &env);
    if let Some(file) = &file {
        if let Some(t) = blank_to_none(std::fs::read_to_string(file).ok()) {
            return Ok(Secret::new(t));
        }
    }
    let file = file.map_or_else(
        || "no token file (HOME unset)".into(),
        |f| f.display().to_string(),
    );
    Err(Error::Config(format!(
        "Hugging Face token not found; checked: the explicit token, HF_TOKEN, \
         HUGGING_FACE_HUB_TOKEN, {file}"
    )))
}

fn token_file(token_path: Option<&Path>, env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let Some(p) = token_path {
        return Some(p.to_owned());
    }
    if let Some(p) = var("HF_TOKEN_PATH") {
        return Some(PathBuf::from(p));
    }
    let home = match var("HF_HOME") {
        Some(h) => PathBuf::from(h),
        None => match var("XDG_CACHE_HOME") {
            Some(c) => Path::new(&c).join("huggingface"),
            None => Path::new(&var("HOME")?).join(".cache").join("huggingface"),
        },
    };
    Some(home.join("token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn an_explicit_token_wins_then_hf_token_then_the_legacy_variable() {
        let vars = env(&[
            ("HF_TOKEN", "hf_env"),
            ("HUGGING_FACE_HUB_TOKEN", "hf_legacy"),
        ]);
        assert_eq!(
            resolve_token(Some("hf_flag"), None, &vars)
                .unwrap()
                .expose(),
            "hf_flag"
        );
        assert_eq!(
            resolve_token(Some("  "), None, &vars).unwrap().expose(),
            "hf_env"
        );
        let legacy = env(&[("HF_TOKEN", ""), ("HUGGING_FACE_HUB_TOKEN", "hf_legacy")]);
        assert_eq!(
            resolve_token(None, None, legacy).unwrap().expose(),
            "hf_legacy"
        );
    }

    #[test]
    fn the_token_file_is_read_from_hf_home_when_no_variable_is_set() {
        let dir = std::env::temp_dir().join(format!("tinker-hf-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_from_file\n").unwrap();
        let home = dir.to_str().unwrap().to_owned();
        let lookup = move |k: &str| (k == "HF_HOME").then(|| home.clone());
        assert_eq!(
            resolve_token(None, None, lookup).unwrap().expose(),
            "hf_from_file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_token_anywhere_is_a_configuration_error_naming_what_was_checked() {
        let err =
            resolve_token(None, Some(Path::new("/nonexistent/hf-token")), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("HF_TOKEN") && text.contains("/nonexistent/hf-token"),
            "{text}"
        );
    }
}
