//! Spec checks the schema cannot express (Kubernetes 1.20 has no CEL). Each failure names
//! the field and what is wrong.

use crate::crd::BinlogStreamSpec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

fn check_pattern(field: &str, p: &str) -> Result<(), Invalid> {
    match p.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => Ok(()),
        _ => Err(invalid(
            field,
            format!("`{p}` is not SCHEMA.TABLE (either part may use `*`)"),
        )),
    }
}

fn check_start(start: &str) -> Result<(), Invalid> {
    let field = "spec.start";
    match start {
        "latest" | "earliest" => Ok(()),
        s if s.starts_with("gtid:") => {
            let set = &s[5..];
            let ok = !set.is_empty()
                && set.split(',').all(|g| {
                    let parts: Vec<&str> = g.trim().split('-').collect();
                    parts.len() == 3
                        && parts
                            .iter()
                            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                });
            if ok {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("`{s}` is not gtid:DOMAIN-SERVER-SEQ[,...]"),
                ))
            }
        }
        s => match s.rsplit_once(':') {
            Some((file, pos)) if !file.is_empty() && pos.parse::<u64>().is_ok_and(|p| p >= 4) => {
                Ok(())
            }
            _ => Err(invalid(
                field,
                format!("`{s}` is not latest, earliest, FILE:POS (POS >= 4) or gtid:SET"),
            )),
        },
    }
}

pub fn validate(spec: &BinlogStreamSpec) -> Result<(), Invalid> {
    let s = &spec.source;
    if s.host.trim().is_empty() {
        return Err(invalid("spec.source.host", "must not be empty"));
    }
    if !(1..=65535).contains(&s.port) {
        return Err(invalid(
            "spec.source.port",
            format!("{} is not a TCP port (1-65535)", s.port),
        ));
    }
    if s.user.is_empty() {
        return Err(invalid("spec.source.user", "must not be empty"));
    }
    if s.password_secret_ref.name.is_empty() || s.password_secret_ref.key.is_empty() {
        return Err(invalid(
            "spec.source.passwordSecretRef",
            "needs both name and key",
        ));
    }
    if let Some(id) = s.server_id {
        if !(1..=i64::from(u32::MAX)).contains(&id) {
            return Err(invalid(
                "spec.source.serverId",
                format!("{id} is outside 1-4294967295"),
            ));
        }
    }
    if let Some(tls) = &s.tls {
        use crate::crd::TlsMode;
        if matches!(tls.mode, TlsMode::VerifyCA | TlsMode::VerifyIdentity)
            && tls.ca_secret_ref.is_none()
        {
            return Err(invalid(
                "spec.source.tls.caSecretRef",
                "is required for VerifyCA and VerifyIdentity",
            ));
        }
    }
    for (i, p) in spec.tables.include.iter().enumerate() {
        check_pattern(&format!("spec.tables.include[{i}]"), p)?;
    }
    for (i, p) in spec.tables.exclude.iter().enumerate() {
        check_pattern(&format!("spec.tables.exclude[{i}]"), p)?;
    }
    let t = &spec.target;
    if t.stream.is_empty()
        || t.stream.len() > 128
        || !t
            .stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(invalid(
            "spec.target.stream",
            format!(
                "`{}` is not a Kinesis stream name (1-128 of a-zA-Z0-9_.-)",
                t.stream
            ),
        ));
    }
    if let Some(pk) = &t.partition_key {
        let ok = pk == "primary-key"
            || pk == "table"
            || pk
                .strip_prefix("constant:")
                .is_some_and(|v| !v.is_empty() && v.chars().count() <= 256);
        if !ok {
            return Err(invalid(
                "spec.target.partitionKey",
                format!("`{pk}` is not primary-key, table or constant:VALUE"),
            ));
        }
    }
    if let Some(e) = &t.endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(invalid(
                "spec.target.endpoint",
                format!("`{e}` is not an http(s) URL"),
            ));
        }
    }
    if let Some(start) = &spec.start {
        check_start(start)?;
    }
    if let Some(o) = &spec.output.oversize {
        if !matches!(o.as_str(), "fail" | "skip" | "key-only") {
            return Err(invalid(
                "spec.output.oversize",
                format!("`{o}` is not fail, skip or key-only"),
            ));
        }
    }
    if spec.lag.threshold_seconds < 1 {
        return Err(invalid("spec.lag.thresholdSeconds", "must be at least 1"));
    }
    Ok(())
}
