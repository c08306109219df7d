//! Credentials for S3: a static key, the standard AWS chain, a credential program, or an IAM
//! role assumed through STS with an External ID (whose own identity is any of the others).
//! With `process.rs`, the only user of `rusoto_sts` and `rusoto_credential`.
//!
//! Whatever the source, credentials are cached and renewed `refresh_margin` before they
//! expire, so uploads never stop for a renewal. An `ExpiredToken` answer (a clock step, a
//! revoked session) drops the cache: the next request renews.

use async_trait::async_trait;
use rusoto_core::Region;
use rusoto_credential::{
    AwsCredentials, ChainProvider, CredentialsError, ProfileProvider, ProvideAwsCredentials,
    StaticProvider,
};
use rusoto_sts::{StsAssumeRoleSessionCredentialsProvider, StsClient};
use std::sync::Arc;
use tokio::sync::Mutex;

use super::process::{self, ProcessProvider};
use super::spec::{AssumeRole, Auth, BaseIdentity, Spec, StaticKey};
use super::{classify, xml_field, StoreError};

type Source = Box<dyn ProvideAwsCredentials + Send + Sync>;

/// Cached, self-renewing credentials of one destination.
pub struct Credentials {
    source: Box<dyn ProvideAwsCredentials + Send + Sync>,
    /// The credentials, and when they were fetched.
    cache: Mutex<Option<(AwsCredentials, chrono::DateTime<chrono::Utc>)>>,
    margin: chrono::Duration,
    /// What the credentials are, for errors: never a secret.
    operation: &'static str,
    /// When the cached credentials expire, unix milliseconds (0: they do not), readable
    /// without waiting for a renewal in progress.
    expires_ms: std::sync::atomic::AtomicI64,
}

/// A handle rusoto's clients sign with.
#[derive(Clone)]
pub struct SharedCredentials(pub Arc<Credentials>);

#[async_trait]
impl ProvideAwsCredentials for SharedCredentials {
    async fn credentials(&self) -> Result<AwsCredentials, CredentialsError> {
        self.0.get().await
    }
}

impl Credentials {
    async fn get(&self) -> Result<AwsCredentials, CredentialsError> {
        // Held across the fetch on purpose: one renewal at a time, the others wait for it.
        let mut cache = self.cache.lock().await;
        let now = crate::clock::now();
        if let Some((cached, fetched)) = cache.as_ref() {
            let fresh = cached.expires_at().is_none_or(|at| at > now + self.margin);
            // Never renew more than once a second, whatever the margin and the lifetime.
            let just_fetched = now - *fetched < chrono::Duration::seconds(1);
            let usable = cached.expires_at().is_none_or(|at| at > now);
            if fresh || (just_fetched && usable) {
                return Ok(cached.clone());
            }
        }
        match self.source.credentials().await {
            Ok(renewed) => {
                if let Some(at) = renewed.expires_at() {
                    tracing::info!(operation = self.operation, expires = %at.format("%Y-%m-%dT%H:%M:%SZ"), "temporary credentials obtained");
                }
                let expires = renewed.expires_at().map_or(0, |at| at.timestamp_millis());
                self.expires_ms
                    .store(expires, std::sync::atomic::Ordering::Relaxed);
                *cache = Some((renewed.clone(), now));
                Ok(renewed)
            }
            // Renewal failed inside the margin: the old credentials still work for a while.
            Err(e) => match cache.as_ref() {
                Some((cached, _)) if cached.expires_at().is_some_and(|at| at > now) => {
                    let why = credentials_error(self.operation, &e);
                    tracing::warn!(operation = self.operation, error = %why, "cannot renew credentials yet; using the current ones until they expire");
                    Ok(cached.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// When the credentials in use expire (unix milliseconds), if they are temporary.
    pub fn expire_at(&self) -> Option<i64> {
        Some(self.expires_ms.load(std::sync::atomic::Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Forgets the cached credentials: the next request fetches new ones.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// Fetches credentials now, unless those cached are fresh (`check`, and every request
    /// before its own clock starts), as a [`StoreError`] of the credentials' own operation
    /// if that fails or takes longer than `timeout`.
    pub async fn verify(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        match tokio::time::timeout(timeout, self.get()).await {
            Ok(result) => result
                .map(drop)
                .map_err(|e| credentials_error(self.operation, &e)),
            Err(_) => Err(StoreError::transport(
                self.operation,
                "Timeout",
                format!("no credentials within {timeout:?}"),
            )),
        }
    }
}

/// The credentials a destination's requests are signed with.
pub fn credentials(destination: &Spec) -> Result<SharedCredentials, StoreError> {
    let (source, operation): (Source, &'static str) = match &destination.auth {
        Auth::Static(key) => (Box::new(static_provider(key)), "StaticCredentials"),
        Auth::Default { profile } => (chain(profile.as_deref())?, "DefaultCredentialChain"),
        Auth::Process(command) => (
            Box::new(ProcessProvider::new(command.clone(), None)),
            "CredentialProcess",
        ),
        Auth::AssumeRole(role) => (assume_role(destination, role)?, "AssumeRole"),
    };
    Ok(cached(source, operation, destination))
}

/// `source`, cached and renewed `refresh_margin` before expiry.
fn cached(source: Source, operation: &'static str, destination: &Spec) -> SharedCredentials {
    let margin = chrono::Duration::from_std(destination.refresh_margin)
        .unwrap_or(chrono::Duration::minutes(5));
    SharedCredentials(Arc::new(Credentials {
        source,
        cache: Mutex::new(None),
        margin,
        operation,
        expires_ms: std::sync::atomic::AtomicI64::new(0),
    }))
}

/// A source as a provider rusoto's clients take (they cannot take a boxed one).
struct Uncached(Source);

#[async_trait]
impl ProvideAwsCredentials for Uncached {
    async fn credentials(&self) -> Result<AwsCredentials, CredentialsError> {
        self.0.credentials().await
    }
}

fn static_provider(key: &StaticKey) -> StaticProvider {
    StaticProvider::new_minimal(
        key.access_key_id.clone(),
        key.secret_access_key.expose().to_string(),
    )
}

/// Environment, shared credentials file (with `profile`), container, instance metadata.
/// A named profile with a `credential_process` (and no key) runs that program instead,
/// as the AWS CLI does; rusoto would only run the default profile's.
fn chain(profile: Option<&str>) -> Result<Source, StoreError> {
    let Some(name) = profile else {
        return Ok(Box::new(ChainProvider::new()));
    };
    let unusable = |message: String| {
        StoreError::permanent("DefaultCredentialChain", "CredentialsError", message)
    };
    if let Some(command) = process::profile_process(name).map_err(unusable)? {
        return Ok(Box::new(ProcessProvider::new(
            command,
            Some(name.to_string()),
        )));
    }
    let mut profiles = ProfileProvider::new().map_err(|e| unusable(e.message))?;
    profiles.set_profile(name);
    Ok(Box::new(ChainProvider::with_profile_provider(profiles)))
}

fn assume_role(destination: &Spec, role: &AssumeRole) -> Result<Source, StoreError> {
    let http = super::net::client("AssumeRole", &destination.network)?;
    let region_name = role
        .sts_region
        .clone()
        .unwrap_or_else(|| destination.region.clone());
    let region = match &role.sts_endpoint {
        Some(endpoint) => Region::Custom {
            name: region_name,
            endpoint: endpoint.clone(),
        },
        None => region_name.parse().unwrap_or(Region::UsEast1),
    };
    // The identity that calls STS. A credential program's answer is cached until its own
    // Expiration, or it would run for every AssumeRole; the chain is asked each time, as
    // before, so a credentials file rewritten by other tools is read again.
    let base: Source = match &role.base {
        BaseIdentity::Static(key) => Box::new(static_provider(key)),
        BaseIdentity::Chain { profile } => chain(profile.as_deref())?,
        BaseIdentity::Process(command) => Box::new(cached(
            Box::new(ProcessProvider::new(command.clone(), None)),
            "CredentialProcess",
            destination,
        )),
    };
    let client = StsClient::new_with(http, Uncached(base), region);
    let duration = chrono::Duration::seconds(role.duration.as_secs() as i64);
    Ok(Box::new(StsAssumeRoleSessionCredentialsProvider::new(
        client,
        role.role_arn.clone(),
        role.session_name.clone(),
        role.external_id.clone(),
        Some(duration),
        None,
        None,
    )))
}

/// Makes a readable error of a credentials failure. rusoto's STS provider wraps the STS
/// answer in text such as `StsProvider get_session_token error: Unknown(BufferedHttpResponse
/// {status: 403, body: "<ErrorResponse>…<Code>AccessDenied</Code>…"})`.
pub fn credentials_error(operation: &'static str, e: &CredentialsError) -> StoreError {
    let text = &e.message;
    if let Some(at) = text.find(process::FAILED) {
        // rusoto_sts quotes a failing base identity's message: cut at the closing quote.
        let message = text[at..].split('"').next().unwrap_or_default();
        return StoreError::permanent(operation, "CredentialProcessFailed", message.to_string());
    }
    let status = text
        .split_once("status: ")
        .and_then(|(_, rest)| rest.get(..3))
        .and_then(|digits| digits.parse::<u16>().ok());
    let code = xml_field(text, "Code");
    let message = xml_field(text, "Message");
    match (status, code) {
        (Some(status), Some(code)) => StoreError {
            operation,
            class: classify(status, &code),
            code,
            status: Some(status),
            message: message.unwrap_or_default(),
        },
        (Some(status), None) => StoreError::from_response(operation, status, None, String::new()),
        _ if text.contains("HttpDispatch") => {
            let dispatch = text
                .split_once("message: \"")
                .map_or(text.as_str(), |(_, rest)| {
                    rest.split('"').next().unwrap_or(rest)
                });
            super::net::connect_failure(operation, dispatch)
        }
        _ if text.contains("connect")
            || text.contains("dispatch")
            || text.contains("timed out") =>
        {
            StoreError::transport(operation, "ConnectionFailed", first_line(text))
        }
        // The default chain folds every failure, an instance-metadata timeout included,
        // into "Couldn't find AWS credentials": retry, with backoff, rather than fail files.
        _ => StoreError::transport(operation, "CredentialsUnavailable", first_line(text)),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_failures_read_well() {
        let e = CredentialsError::new(
            "StsProvider get_session_token error: Unknown(BufferedHttpResponse {status: 403, body: \"<ErrorResponse><Error><Code>AccessDenied</Code><Message>not allowed to assume</Message></Error></ErrorResponse>\", headers: {}})",
        );
        let err = credentials_error("AssumeRole", &e);
        assert_eq!(
            (err.status, err.code.as_str(), err.class),
            (
                Some(403),
                "AccessDenied",
                super::super::ErrorClass::Permanent
            )
        );
        assert_eq!(err.message, "not allowed to assume");
        let down = credentials_error(
            "AssumeRole",
            &CredentialsError::new("error trying to connect: Connection refused"),
        );
        assert_eq!(
            (down.code.as_str(), down.class),
            ("ConnectionFailed", super::super::ErrorClass::Transient)
        );
        // How rusoto_sts words a connection that failed in our connector.
        let untrusted = credentials_error(
            "AssumeRole",
            &CredentialsError::new(
                "StsProvider get_session_token error: HttpDispatch(HttpDispatchError { message: \"Error during dispatch: error trying to connect: certificate of sts.lan not trusted (self-signed certificate): set ca_file or install the CA\" })",
            ),
        );
        assert_eq!(untrusted.code, "UntrustedCertificate");
        let refused = credentials_error(
            "AssumeRole",
            &CredentialsError::new(
                "StsProvider get_session_token error: HttpDispatch(HttpDispatchError { message: \"Error during dispatch: error trying to connect: proxy http://p:3128 (from HTTPS_PROXY) refused the tunnel to sts.amazonaws.com:443: 407 Proxy Authentication Required\" })",
            ),
        );
        assert_eq!(
            (refused.code.as_str(), refused.is_destination_wide()),
            ("ProxyRefused", true)
        );
        let program = credentials_error(
            "AssumeRole",
            &CredentialsError::new(
                "StsProvider get_session_token error: Credentials(CredentialsError { message: \"credential program /usr/bin/helper exited with exit status: 1: no cert\" })",
            ),
        );
        assert_eq!(program.code, "CredentialProcessFailed");
        assert_eq!(
            program.message,
            "credential program /usr/bin/helper exited with exit status: 1: no cert"
        );
        assert_eq!(
            untrusted.message,
            "certificate of sts.lan not trusted (self-signed certificate): set ca_file or install the CA"
        );
    }
}
