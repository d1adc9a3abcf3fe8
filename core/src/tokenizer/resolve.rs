//! Which Hugging Face repository holds a base model's tokenizer: the official SDK's rules
//! (`_load_tokenizer_from_model_info` in `tinker` 0.38), kept in one place.

/// A tokenizer on the Hugging Face Hub: a repository and the revision to read it at.
///
/// ```
/// use tinker_core::tokenizer::TokenizerRef;
///
/// // A training run's `get_info` names its tokenizer; the server's id wins over the model name.
/// let r = TokenizerRef::for_model("Qwen/Qwen3-8B:base", Some("Qwen/Qwen3-8B:rev1"));
/// assert_eq!(r.repo_id, "Qwen/Qwen3-8B");
/// assert_eq!(r.revision, "main");
///
/// // Llama 3 models use an ungated copy of the tokenizer.
/// let r = TokenizerRef::for_model("meta-llama/Llama-3.2-1B", None);
/// assert_eq!(r.repo_id, "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenizerRef {
    /// `org/name` of the Hub repository.
    pub repo_id: String,
    /// Branch, tag or commit to read the files at (`main` unless a model pins one).
    pub revision: String,
}

/// The revision every repository is read at unless a rule pins another.
pub const DEFAULT_REVISION: &str = "main";

/// The ungated copy of the Llama 3 tokenizer the SDK loads for every `meta-llama/Llama-3*` model.
pub const LLAMA3_TOKENIZER_REPO: &str = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer";

/// Models whose tokenizer the SDK reads at a pinned commit (`repo as asked`, `repo read`, commit).
const PINNED: [(&str, &str, &str); 5] = [
    (
        "moonshotai/Kimi-K2-Thinking",
        "moonshotai/Kimi-K2-Thinking",
        "612681931a8c906ddb349f8ad0f582cb552189cd",
    ),
    (
        "moonshotai/Kimi-K2.5-Text-Only",
        "moonshotai/Kimi-K2.5",
        "4d01dfe0332d63057c186e0b262165819efb6611",
    ),
    (
        "moonshotai/Kimi-K2.5",
        "moonshotai/Kimi-K2.5",
        "4d01dfe0332d63057c186e0b262165819efb6611",
    ),
    (
        "moonshotai/Kimi-K2.6",
        "moonshotai/Kimi-K2.6",
        "b5aabbfb20227ed42becbf5541dbffd213942c58",
    ),
    (
        "moonshotai/Kimi-K3",
        "moonshotai/Kimi-K3",
        "f831ab66814297da540d832a5235f8e904f29d06",
    ),
];

impl TokenizerRef {
    /// The tokenizer of `model_name`, given the tokenizer id a training run's `get_info` reported
    /// (`None` for a sampling client, which knows only its base model).
    ///
    /// The rules, in order: a `:suffix` is dropped from both names; a server-given id is used
    /// as is; otherwise `meta-llama/Llama-3*` maps to [`LLAMA3_TOKENIZER_REPO`], an
    /// `org/model/variant` name to `org/model`, and any other name to itself. Kimi models are
    /// then read at the commit the SDK pins.
    pub fn for_model(model_name: &str, server_tokenizer_id: Option<&str>) -> TokenizerRef {
        let model_name = before_colon(model_name);
        let repo = match server_tokenizer_id.map(before_colon) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ if model_name.starts_with("meta-llama/Llama-3") => LLAMA3_TOKENIZER_REPO.to_owned(),
            _ => match model_name.split('/').collect::<Vec<_>>()[..] {
                [org, model, _variant] => format!("{org}/{model}"),
                _ => model_name.to_owned(),
            },
        };
        match PINNED.iter().find(|(asked, _, _)| *asked == repo) {
            Some((_, read, commit)) => TokenizerRef {
                repo_id: (*read).to_owned(),
                revision: (*commit).to_owned(),
            },
            None => TokenizerRef {
                repo_id: repo,
                revision: DEFAULT_REVISION.to_owned(),
            },
        }
    }

    /// Whether the SDK refuses to load this tokenizer with Hugging Face tooling: Thinking
    /// Machines' own models (`TML/…`, `thinkingmachines/…`) need the `tml-renderers` package.
    pub fn is_thinking_machines_model(&self) -> bool {
        self.repo_id.starts_with("TML/") || self.repo_id.starts_with("thinkingmachines/")
    }
}

fn before_colon(s: &str) -> &str {
    s.split(':').next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(model: &str, server: Option<&str>) -> (String, String) {
        let r = TokenizerRef::for_model(model, server);
        (r.repo_id, r.revision)
    }

    #[test]
    fn the_sdk_name_rules_pick_the_tokenizer_repository() {
        let main = || "main".to_owned();
        let table: [(&str, Option<&str>, &str, String); 9] = [
            // The server's id wins, minus its revision suffix.
            (
                "Qwen/Qwen3-8B",
                Some("Qwen/Qwen3-8B-Base:abc"),
                "Qwen/Qwen3-8B-Base",
                main(),
            ),
            // An empty server id counts as none.
            ("Qwen/Qwen3-8B", Some(""), "Qwen/Qwen3-8B", main()),
            ("Qwen/Qwen3-8B", None, "Qwen/Qwen3-8B", main()),
            (
                "meta-llama/Llama-3.2-1B",
                None,
                LLAMA3_TOKENIZER_REPO,
                main(),
            ),
            (
                "meta-llama/Llama-3.1-70B:fp8",
                None,
                LLAMA3_TOKENIZER_REPO,
                main(),
            ),
            // A server id is not rewritten by the Llama rule.
            (
                "meta-llama/Llama-3.2-1B",
                Some("meta-llama/Llama-3.2-1B"),
                "meta-llama/Llama-3.2-1B",
                main(),
            ),
            // org/model/variant → org/model.
            ("Qwen/Qwen3-8B/fp8-serving", None, "Qwen/Qwen3-8B", main()),
            (
                "moonshotai/Kimi-K2.5-Text-Only",
                None,
                "moonshotai/Kimi-K2.5",
                "4d01dfe0332d63057c186e0b262165819efb6611".into(),
            ),
            (
                "moonshotai/Kimi-K2-Thinking",
                None,
                "moonshotai/Kimi-K2-Thinking",
                "612681931a8c906ddb349f8ad0f582cb552189cd".into(),
            ),
        ];
        for (model, server, want_repo, want_rev) in table {
            assert_eq!(
                repo(model, server),
                (want_repo.to_owned(), want_rev),
                "model {model:?}, server id {server:?}"
            );
        }
    }

    #[test]
    fn thinking_machines_models_are_recognised() {
        assert!(TokenizerRef::for_model("TML/model-a", None).is_thinking_machines_model());
        assert!(
            TokenizerRef::for_model("x", Some("thinkingmachines/t")).is_thinking_machines_model()
        );
        assert!(!TokenizerRef::for_model("Qwen/Qwen3-8B", None).is_thinking_machines_model());
    }
}
