//! Who may read the agent's `/events` and `/report` (and `/metrics` with `--protect-metrics`):
//! kube-rbac-proxy's convention, so the cluster's RBAC decides. A request carries a bearer
//! token (`Authorization: Bearer ...`); the API server says whose it is (a TokenReview) and
//! whether that user may `get` the path as a non-resource URL (a SubjectAccessReview with the
//! user's groups, uid and extra), which a ClusterRole grants with
//! `nonResourceURLs: ["/events", "/report"]`. No token or an unknown one is 401, a token without
//! the permission 403, an API that cannot be asked 503. Answers are cached as kube-rbac-proxy
//! caches them (pkg/authn/delegating.go, pkg/authz/auth.go): an allowed request 5 min, a
//! refused one 30 s; tokens by their SHA-256, never kept themselves.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::Digest as _;

/// How long an allowed answer is kept.
const ALLOW_TTL: Duration = Duration::from_mins(5);
/// How long a refusal is kept (a permission just granted works within 30 s).
const DENY_TTL: Duration = Duration::from_secs(30);
/// Cached answers at most (each a hash and a path); past it, the expired go, then all.
const CACHE_MAX: usize = 4096;
/// A TokenReview or SubjectAccessReview that takes longer is an API that cannot be asked.
const REVIEW_DEADLINE: Duration = Duration::from_secs(3);

/// Which of the agent's endpoints need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/events` and `/report` (the default).
    Token,
    /// `/metrics` too (`--protect-metrics`).
    TokenWithMetrics,
    /// None (`--no-auth`).
    Open,
}

/// Answers by (SHA-256 of the token, path), with when each expires.
type Cache = HashMap<([u8; 32], String), (Decision, Instant)>;

/// What the API server said of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no token, or one the API server does not know.
    Unauthenticated(String),
    /// 403: a known user without the permission.
    Forbidden(String),
    /// 503: the API could not be asked (no client, no answer, an error).
    Unavailable(String),
}

/// The paths that need a token, and the API that checks them.
pub struct Guard {
    client: Option<Client>,
    /// Why there is no client.
    no_client: String,
    access: Access,
    cache: Mutex<Cache>,
}

impl Guard {
    pub fn new(client: Option<Client>, no_client: &str, access: Access) -> Self {
        Self { client, no_client: no_client.to_string(), access, cache: Mutex::default() }
    }

    /// Whether `path` needs a token (health endpoints never do: the kubelet probes them).
    pub fn protects(&self, path: &str) -> bool {
        match self.access {
            Access::Open => false,
            Access::Token => matches!(path, "/events" | "/report"),
            Access::TokenWithMetrics => matches!(path, "/events" | "/report" | "/metrics"),
        }
    }

    /// The decision for a request to `path` with this `Authorization` header.
    pub async fn check(&self, authorization: Option<&str>, path: &str) -> Decision {
        let Some(token) = authorization.and_then(bearer) else {
            return Decision::Unauthenticated("no bearer token".into());
        };
        let key = (sha2::Sha256::digest(token.as_bytes()).into(), path.to_string());
        let now = Instant::now();
        if let Some((decision, until)) = self.cache.lock().expect("auth cache").get(&key)
            && now < *until
        {
            return decision.clone();
        }
        let decision = match &self.client {
            None => return Decision::Unavailable(format!("no API to check the token: {}", self.no_client)),
            Some(client) => match tokio::time::timeout(REVIEW_DEADLINE, review(client, token, path)).await {
                Ok(d) => d,
                Err(_) => Decision::Unavailable("the API did not answer the review in time".into()),
            },
        };
        let ttl = match decision {
            Decision::Allow => ALLOW_TTL,
            Decision::Unauthenticated(_) | Decision::Forbidden(_) => DENY_TTL,
            // Not cached: the next request asks again.
            Decision::Unavailable(_) => return decision,
        };
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (decision.clone(), now + ttl));
        decision
    }
}

/// The token of `Bearer TOKEN` (the scheme case-insensitive, as RFC 6750 has it).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A TokenReview, then a SubjectAccessReview of `get` on the path as a non-resource URL.
async fn review(client: &Client, token: &str, path: &str) -> Decision {
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let asked =
        TokenReview { spec: TokenReviewSpec { token: token.to_string(), audiences: None }, ..TokenReview::default() };
    let status = match reviews.create(&PostParams::default(), &asked).await {
        Ok(r) => r.status.unwrap_or_default(),
        Err(e) => return Decision::Unavailable(format!("TokenReview: {e}")),
    };
    if status.authenticated != Some(true) {
        let why =
            status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "the API server does not know the token".into());
        return Decision::Unauthenticated(why);
    }
    let user = status.user.unwrap_or_default();
    let name = user.username.clone().unwrap_or_default();
    let access = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes { path: Some(path.into()), verb: Some("get".into()) }),
            resource_attributes: None,
        },
        ..SubjectAccessReview::default()
    };
    let access_reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    match access_reviews.create(&PostParams::default(), &access).await {
        Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Decision::Allow,
        Ok(r) => {
            let reason = r.status.and_then(|s| s.reason).filter(|r| !r.is_empty());
            Decision::Forbidden(format!(
                "user={name} verb=get path={path}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ))
        }
        Err(e) => Decision::Unavailable(format!("SubjectAccessReview: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic dXNlcg=="), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[tokio::test]
    async fn what_is_protected_and_without_an_api() {
        let guard = Guard::new(None, "no kubeconfig", Access::Token);
        assert!(guard.protects("/events") && guard.protects("/report"));
        assert!(!guard.protects("/metrics") && !guard.protects("/healthz") && !guard.protects("/readyz"));
        assert!(Guard::new(None, "", Access::TokenWithMetrics).protects("/metrics"));
        assert!(!Guard::new(None, "", Access::Open).protects("/events"), "--no-auth");
        assert_eq!(guard.check(None, "/events").await, Decision::Unauthenticated("no bearer token".into()));
        assert_eq!(
            guard.check(Some("Bearer t"), "/events").await,
            Decision::Unavailable("no API to check the token: no kubeconfig".into())
        );
    }
}
