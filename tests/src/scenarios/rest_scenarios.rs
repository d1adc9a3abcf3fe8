//! Checkpoint management over REST (A11).

use tinker_core::types::{FinishReason, LoraConfig};

use super::data::BASE_MODEL;
use super::{Env, Runtime};
use crate::server::LocalServerConfig;

/// A11: list checkpoints (per run and across runs), set a TTL, publish and unpublish, read the
/// weights info, address a run by its `run-id:train:0` id, and delete three paths in one call
/// that reports each outcome (including one that does not exist).
pub async fn a11_checkpoint_management<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(4))
        .await
        .unwrap();
    let mut state_paths = Vec::new();
    for name in ["a", "b", "c"] {
        state_paths.push(training.save_state(name).await.unwrap().await.unwrap().path);
    }
    let sampler_path = training
        .save_weights_for_sampler("s")
        .await
        .unwrap()
        .await
        .unwrap()
        .path
        .unwrap();
    let rest = service.create_rest_client();

    let run = rest
        .get_training_run(training.model_id())
        .await
        .expect("run by id");
    assert_eq!(run.training_run_id, training.model_id());
    assert_eq!(run.base_model, BASE_MODEL);
    let by_path = rest
        .get_training_run_by_tinker_path(&sampler_path)
        .await
        .expect("run by path");
    assert_eq!(by_path.training_run_id, training.model_id());

    let listed = rest.list_checkpoints(training.model_id()).await.unwrap();
    let paths: Vec<&str> = listed
        .checkpoints
        .iter()
        .map(|c| c.tinker_path.as_str())
        .collect();
    for p in state_paths.iter().chain([&sampler_path]) {
        assert!(paths.contains(&p.as_str()), "{p} listed in {paths:?}");
    }
    let page = rest.list_user_checkpoints(100, 0).await.unwrap();
    assert_eq!(page.checkpoints.len(), 4);

    rest.set_checkpoint_ttl(&state_paths[0], Some(3600))
        .await
        .expect("set TTL");
    rest.publish_checkpoint(&sampler_path)
        .await
        .expect("publish");
    let listed = rest.list_checkpoints(training.model_id()).await.unwrap();
    let find = |p: &str| {
        listed
            .checkpoints
            .iter()
            .find(|c| c.tinker_path == p)
            .cloned()
            .unwrap()
    };
    assert!(find(&state_paths[0]).expires_at.is_some(), "TTL set");
    assert!(find(&sampler_path).public, "published");
    rest.unpublish_checkpoint(&sampler_path)
        .await
        .expect("unpublish");
    rest.set_checkpoint_ttl(&state_paths[0], None)
        .await
        .expect("remove TTL");

    let info = rest
        .get_weights_info(&state_paths[1])
        .await
        .expect("weights info");
    assert_eq!(info.base_model, BASE_MODEL);
    assert!(info.is_lora);

    let missing = format!("tinker://{}/weights/never_saved", training.model_id());
    let targets = [
        state_paths[0].as_str(),
        state_paths[1].as_str(),
        missing.as_str(),
    ];
    let report = rest.delete_checkpoints(&targets).await;
    assert_eq!(report.len(), 3);
    assert!(report[0].1.is_ok() && report[1].1.is_ok(), "{report:?}");
    let err = report[2]
        .1
        .as_ref()
        .expect_err("a missing checkpoint is reported");
    assert_eq!(err.status(), Some(404), "{err}");
    let listed = rest.list_checkpoints(training.model_id()).await.unwrap();
    let left: Vec<&str> = listed
        .checkpoints
        .iter()
        .map(|c| c.tinker_path.as_str())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&state_paths[0].as_str()));

    let bad = rest.delete_checkpoint("weights/not-a-tinker-path").await;
    assert!(bad.is_err(), "a malformed path is rejected before sending");

    let sessions = rest.list_sessions(20, 0).await.unwrap();
    let session_id = service.session_id().await.unwrap();
    assert!(sessions.sessions.contains(&session_id));
    let session = rest.get_session(&session_id).await.unwrap();
    assert!(session
        .training_run_ids
        .contains(&training.model_id().to_owned()));
    service.close(FinishReason::Success).await.unwrap();
}
