//! Every Admin RPC needs `authorization: Bearer <admin.token>`. Tokens are
//! compared as SHA-256 digests in constant time, so neither content nor length
//! leaks through timing. With no token configured (allowed on loopback only,
//! see the config loader) every local caller is trusted.

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use tonic::{Request, Status};

#[derive(Clone)]
pub struct AdminAuth {
    token: Arc<RwLock<Option<String>>>,
    /// Calls refused here, counted in `portcullis_admin_calls_total{result="unauthenticated"}`.
    rejected: Counter,
}

impl AdminAuth {
    pub fn new(token: Arc<RwLock<Option<String>>>, rejected: Counter) -> Self {
        AdminAuth { token, rejected }
    }

    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let checked = self.authenticate(request);
        if checked.is_err() {
            self.rejected.inc();
        }
        checked
    }

    fn authenticate(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let expected = self.token.read().expect("admin token lock poisoned").clone();
        let Some(expected) = expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <admin token>"))?;
        if same_secret(presented, &expected) { Ok(request) } else { Err(Status::unauthenticated("wrong admin token")) }
    }
}

fn same_secret(presented: &str, expected: &str) -> bool {
    let digest = |text: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(digest(presented).as_ref(), digest(expected).as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn requires_the_exact_bearer_token() {
        let rejected = Counter::default();
        let auth = AdminAuth::new(Arc::new(RwLock::new(Some("s3cret".into()))), rejected.clone());
        assert!(auth.check(request(Some("Bearer s3cret"))).is_ok());
        for bad in [None, Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("s3cret"), Some("Basic s3cret")] {
            let err = auth.check(request(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert_eq!(rejected.get(), 5);
        let open = AdminAuth::new(Arc::new(RwLock::new(None)), Counter::default());
        assert!(open.check(request(None)).is_ok());
    }
}
