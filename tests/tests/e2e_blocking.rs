//! The end-to-end suite on the blocking crate's I/O (ureq on the calling thread, a timer thread,
//! a housekeeper thread), plus the blocking API itself on a full SFT story.

use std::time::Duration;

use tinker_core::client::{ClientOptions, ServiceClient};
use tinker_core::io::AsyncRuntime;
use tinker_core::settings::Settings;
use tinker_testkit::scenarios::{batch, mean_nll, Runtime, Sleep, BASE_MODEL};
use tinker_testkit::{LocalServer, LocalServerConfig};

struct Blocking;

impl Runtime for Blocking {
    const NAME: &'static str = "blocking";
    const RL_SAMPLES: usize = 256;
    fn connect(settings: Settings, options: ClientOptions) -> tinker_core::Result<ServiceClient> {
        tinker_blocking::connect_with(settings, options).map(|c| c.as_async().clone())
    }
    fn sleep(duration: Duration) -> Sleep {
        let rt = tinker_blocking::executor::ThreadRuntime;
        rt.sleep_until(rt.now() + duration)
    }
}

tinker_testkit::e2e_suite!(Blocking, tinker_blocking::executor::block_on);

/// The blocking API as a user writes it: submit forward_backward and optim_step, wait for both,
/// checkpoint, sample from the checkpoint, close.
#[test]
fn blocking_api_trains_checkpoints_and_samples() {
    use tinker_blocking::types::{
        AdamParams, FinishReason, LoraConfig, LossFn, ModelInput, SamplingParams,
    };
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    let service = tinker_blocking::connect(settings).unwrap();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .unwrap();
    let mut losses = Vec::new();
    for step in 0..8 {
        let data = batch(step, 8);
        let fb = training
            .forward_backward(data.clone(), LossFn::CrossEntropy)
            .unwrap();
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.05))
            .unwrap();
        losses.push(mean_nll(fb.result().unwrap().loss(), &data));
        opt.result().unwrap();
    }
    assert!(losses[7] < losses[0], "{losses:?}");
    let path = training
        .save_weights_for_sampler("final")
        .unwrap()
        .result()
        .unwrap()
        .path
        .unwrap();
    let sampler = service.create_sampling_client(&path).unwrap();
    let out = sampler
        .sample(
            ModelInput::from_tokens(vec![5, 6]),
            2,
            SamplingParams {
                max_tokens: Some(4),
                ..SamplingParams::default()
            },
        )
        .unwrap();
    assert_eq!(out.sequences.len(), 2);
    // A Pending can be waited for on another thread.
    let fb = training.forward(batch(0, 2), LossFn::CrossEntropy).unwrap();
    let joined = std::thread::spawn(move || fb.result()).join().unwrap();
    assert!(joined.unwrap().loss().is_some());
    service.close(FinishReason::Success).unwrap();
}
