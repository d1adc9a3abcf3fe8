//! A type-erased request, so one [`super::Call`] type serves every endpoint.

use std::time::Duration;

use bytes::Bytes;

use crate::endpoints::{ApiRequest, AttemptHeaders, EndpointSpec, RequestContext};
use crate::error::Result;
use crate::types::RequestType;

/// What a call needs from a typed request: build it per attempt, and know its endpoint.
/// Implemented for every [`ApiRequest`].
pub trait Submission: Send + Sync {
    /// The operation.
    fn spec(&self) -> &'static EndpointSpec;
    /// Checks the user's input (before anything is sent).
    fn check(&self) -> Result<()>;
    /// Builds one attempt (the only header assembly is [`RequestContext::build`]).
    fn build_attempt(
        &self,
        context: &RequestContext,
        attempt: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>>;
    /// The path with its parameters filled in (for error messages).
    fn rendered_path(&self, context: &RequestContext) -> String;
    /// The poll type of the future's result.
    fn result_type(&self) -> Option<RequestType>;
    /// The per-read timeout.
    fn read_timeout_duration(&self) -> Duration;
    /// Puts the training run's seq id into the request, once, when its turn starts (just before
    /// the first attempt is built). Requests without a seq id ignore it.
    fn bind_seq_id(&mut self, seq_id: u64) -> Result<()> {
        let _ = seq_id;
        Ok(())
    }
}

impl<R: ApiRequest + Send + Sync> Submission for R {
    fn spec(&self) -> &'static EndpointSpec {
        self.endpoint()
    }
    fn check(&self) -> Result<()> {
        self.validate()
    }
    fn build_attempt(
        &self,
        context: &RequestContext,
        attempt: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>> {
        context.build(self, attempt)
    }
    fn rendered_path(&self, context: &RequestContext) -> String {
        context
            .path_and_query(self)
            .unwrap_or_else(|_| self.endpoint().path.to_owned())
    }
    fn result_type(&self) -> Option<RequestType> {
        self.request_type()
    }
    fn read_timeout_duration(&self) -> Duration {
        self.read_timeout().duration()
    }
}

/// A request sent with a credential other than the context's: the JWT exchange always
/// authenticates with the API key, even after the context switched to the JWT (protocol.md 2.3).
pub struct WithCredential<R> {
    /// The request.
    pub request: R,
    /// The credential to send it with.
    pub credential: crate::settings::ApiKey,
}

impl<R: ApiRequest + Send + Sync> Submission for WithCredential<R> {
    fn spec(&self) -> &'static EndpointSpec {
        self.request.spec()
    }
    fn check(&self) -> Result<()> {
        self.request.check()
    }
    fn build_attempt(
        &self,
        context: &RequestContext,
        attempt: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>> {
        let mut context = context.clone();
        context.set_credential(self.credential.clone());
        self.request.build_attempt(&context, attempt)
    }
    fn rendered_path(&self, context: &RequestContext) -> String {
        self.request.rendered_path(context)
    }
    fn result_type(&self) -> Option<RequestType> {
        self.request.result_type()
    }
    fn read_timeout_duration(&self) -> Duration {
        self.request.read_timeout_duration()
    }
    fn bind_seq_id(&mut self, seq_id: u64) -> Result<()> {
        self.request.bind_seq_id(seq_id)
    }
}

/// A request of a training run whose `seq_id` is filled in when its turn starts
/// ([`crate::ops::training`] builds one).
pub trait TrainingRequest: ApiRequest + Send + Sync {
    /// Sets the request's `seq_id`.
    fn set_seq_id(&mut self, seq_id: u64);
}

/// A [`TrainingRequest`] as a submission: its seq id is bound when the turn starts.
#[derive(Debug)]
pub struct Sequenced<R>(pub R);

impl<R: TrainingRequest> Submission for Sequenced<R> {
    fn spec(&self) -> &'static EndpointSpec {
        self.0.spec()
    }
    fn check(&self) -> Result<()> {
        self.0.check()
    }
    fn build_attempt(
        &self,
        context: &RequestContext,
        attempt: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>> {
        self.0.build_attempt(context, attempt)
    }
    fn rendered_path(&self, context: &RequestContext) -> String {
        self.0.rendered_path(context)
    }
    fn result_type(&self) -> Option<RequestType> {
        self.0.result_type()
    }
    fn read_timeout_duration(&self) -> Duration {
        self.0.read_timeout_duration()
    }
    fn bind_seq_id(&mut self, seq_id: u64) -> Result<()> {
        self.0.set_seq_id(seq_id);
        Ok(())
    }
}

macro_rules! training_request {
    ($($t:ty),* $(,)?) => {$(
        impl TrainingRequest for $t {
            fn set_seq_id(&mut self, seq_id: u64) {
                self.seq_id = Some(seq_id);
            }
        }
    )*};
}

training_request!(
    crate::types::OptimStepRequest,
    crate::types::SaveWeightsRequest,
    crate::types::SaveWeightsForSamplerRequest,
    crate::types::SaveWeightsExternalRequest,
    crate::types::LoadWeightsRequest,
);

/// Stands in for a call's request after the call was handed to the background
/// ([`super::Call`] keeps nothing of it).
pub(super) struct Handed(pub(super) &'static EndpointSpec);

impl Submission for Handed {
    fn spec(&self) -> &'static EndpointSpec {
        self.0
    }
    fn check(&self) -> Result<()> {
        Ok(())
    }
    fn build_attempt(
        &self,
        _: &RequestContext,
        _: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>> {
        Err(crate::error::Error::Closed(
            "the call was handed to the background".into(),
        ))
    }
    fn rendered_path(&self, _: &RequestContext) -> String {
        self.0.path.to_owned()
    }
    fn result_type(&self) -> Option<RequestType> {
        None
    }
    fn read_timeout_duration(&self) -> Duration {
        Duration::ZERO
    }
}
