//! `get_tokenizer` against the local server: the run's tokenizer id resolves to a repository of
//! the server's Hugging Face Hub stand-in, whose `tokenizer.json` is the toy model's byte
//! tokenizer; text and chat prompts built with it are what the toy model reads.
#![cfg(feature = "tokenizers")]

use tinker_blocking::types::{LoraConfig, SamplingParams};
use tinker_blocking::{ErrorKind, Settings};
use tinker_core::tokenizer::{ChatFormat, ChatRenderer, HubSettings, Message};
use tinker_testkit::model::tokenizer as toy;
use tinker_testkit::server::{LocalServer, LocalServerConfig, ServerControl};

fn connect(server: &ServerControl) -> tinker_blocking::ServiceClient {
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    tinker_blocking::connect(settings).unwrap()
}

fn hub(server: &ServerControl) -> HubSettings {
    HubSettings::default().with_endpoint(&format!("{}/_hub", server.url()))
}

#[test]
fn a_training_run_loads_its_tokenizer_from_the_hub_and_it_matches_the_toy_model() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let service = connect(&server);
    let training = service
        .create_lora_training_client("Qwen/Qwen3-8B", LoraConfig::new(4))
        .unwrap();
    let tokenizer = training.get_tokenizer_from(hub(&server)).unwrap();

    let text = "The toy model reads bytes: é ☕";
    let ids = tokenizer.encode(text, false).unwrap();
    assert_eq!(
        ids,
        toy::encode(text),
        "same ids as the toy model's byte tokenizer"
    );
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    assert_eq!(tokenizer.token_to_id("<|im_end|>"), Some(258));
}

#[test]
fn a_sampler_of_a_llama_model_reads_the_ungated_llama_tokenizer_and_samples_a_chat_prompt() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let service = connect(&server);
    let sampler = service
        .create_base_model_sampling_client("meta-llama/Llama-3.2-1B")
        .unwrap();
    let tokenizer = sampler.get_tokenizer_from(hub(&server)).unwrap();

    // The tokenizer came from the substitute repository the SDK uses for Llama 3 models.
    let chat = ChatRenderer::new(
        tokenizer.clone(),
        ChatFormat::for_model(sampler.get_base_model()),
    );
    assert_eq!(chat.format(), ChatFormat::Llama3);
    let prompt = chat.generation_prompt(&[Message::user("hi")]).unwrap();
    let begin = tokenizer.token_to_id("<|begin_of_text|>").unwrap();
    let tokens = prompt.to_tokens().unwrap();
    assert_eq!(tokens[0], begin);
    assert_eq!(
        tokenizer.decode(&tokens, true).unwrap(),
        "user\n\nhiassistant\n\n"
    );

    let params = SamplingParams {
        max_tokens: Some(4),
        stop: Some(chat.stop_condition().unwrap()),
        ..SamplingParams::default()
    };
    let out = sampler.sample(prompt, 1, params).unwrap();
    assert_eq!(out.sequences.len(), 1);
    assert!(out.sequences[0].tokens.len() <= 4);
}

#[test]
fn a_model_the_hub_does_not_have_fails_with_the_file_url_and_a_404() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let service = connect(&server);
    let training = service
        .create_lora_training_client("Qwen/Qwen3-8B", LoraConfig::new(4))
        .unwrap();
    // A Hub that serves nothing at this prefix.
    let elsewhere = HubSettings::default().with_endpoint(&format!("{}/_hub/missing", server.url()));
    let err = training.get_tokenizer_from(elsewhere).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("/resolve/main/tokenizer.json"),
        "{err}"
    );
}
