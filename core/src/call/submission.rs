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
}
