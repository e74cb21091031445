//! What a tenant (whoever may create a BinlogStream in a namespace) may ask of the operator,
//! beyond the namespace's own RBAC. Pure: the operator's flags set the policy, this checks a
//! spec against it.

use crate::{crd::BinlogStreamSpec, reconcile::validate::Invalid};

/// The label a Secret's owner sets to let BinlogStreams of its namespace use it. Without it,
/// anyone allowed to create a BinlogStream could have any Secret of the namespace mounted
/// into a pod that sends it to a host of their choosing.
pub const SECRET_OPT_IN_LABEL: &str = "cdc.binlogstream.io/allow-binlogstreams";

/// The service-account annotation IRSA reads; the only one allowed by default.
pub const IRSA_ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancyPolicy {
    /// `spec.publisher.image` values allowed: exact names, or prefixes ending in `*`. Empty:
    /// overrides are refused, every publisher runs the operator's image.
    pub allowed_images: Vec<String>,
    /// `spec.publisher.serviceAccountAnnotations` keys allowed (exact, or prefix ending in `*`).
    pub allowed_sa_annotations: Vec<String>,
}

impl Default for TenancyPolicy {
    fn default() -> Self {
        TenancyPolicy {
            allowed_images: Vec::new(),
            allowed_sa_annotations: vec![IRSA_ROLE_ANNOTATION.to_string()],
        }
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl TenancyPolicy {
    pub fn check(&self, spec: &BinlogStreamSpec) -> Result<(), Invalid> {
        let p = &spec.publisher;
        if let Some(image) = &p.image {
            if !self.allowed_images.iter().any(|a| matches(a, image)) {
                let why = if self.allowed_images.is_empty() {
                    "image overrides are disabled on this operator (every publisher runs the operator's image; a platform team can allow images with the chart value tenancy.allowedPublisherImages)".to_string()
                } else {
                    format!(
                        "`{image}` is not among the images this operator allows ({})",
                        self.allowed_images.join(", ")
                    )
                };
                return Err(Invalid {
                    field: "spec.publisher.image".into(),
                    message: why,
                });
            }
        }
        for key in p
            .service_account_annotations
            .iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !self.allowed_sa_annotations.iter().any(|a| matches(a, key)) {
                return Err(Invalid {
                    field: format!("spec.publisher.serviceAccountAnnotations[{key}]"),
                    message: format!(
                        "annotation `{key}` is not allowed on publisher service accounts (allowed: {})",
                        self.allowed_sa_annotations.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(publisher: serde_json::Value) -> BinlogStreamSpec {
        serde_json::from_value(json!({
            "source": {"host": "db", "user": "repl", "passwordSecretRef": {"name": "pw", "key": "password"}},
            "target": {"stream": "s"},
            "publisher": publisher,
        }))
        .expect("spec")
    }

    #[test]
    fn image_overrides_are_refused_unless_allowed() {
        let s = spec(json!({"image": "attacker.example/steal:1"}));
        let e = TenancyPolicy::default().check(&s).expect_err("refused");
        assert_eq!(e.field, "spec.publisher.image");
        assert!(e.message.contains("disabled"), "{}", e.message);
        let allowed = TenancyPolicy {
            allowed_images: vec!["registry.example/binlogstream/*".into()],
            ..Default::default()
        };
        assert!(allowed.check(&s).is_err());
        let ok = spec(json!({"image": "registry.example/binlogstream/publisher:0.2"}));
        assert!(allowed.check(&ok).is_ok());
        assert!(TenancyPolicy::default().check(&spec(json!({}))).is_ok());
    }

    #[test]
    fn only_allowed_service_account_annotations_pass() {
        let irsa = spec(
            json!({"serviceAccountAnnotations": {IRSA_ROLE_ANNOTATION: "arn:aws:iam::1:role/r"}}),
        );
        assert!(TenancyPolicy::default().check(&irsa).is_ok());
        let other = spec(
            json!({"serviceAccountAnnotations": {"kubernetes.io/enforce-mountable-secrets": "false"}}),
        );
        let e = TenancyPolicy::default().check(&other).expect_err("refused");
        assert_eq!(
            e.field,
            "spec.publisher.serviceAccountAnnotations[kubernetes.io/enforce-mountable-secrets]"
        );
    }
}
