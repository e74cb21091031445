//! Spec checks the schema cannot express (Kubernetes 1.20 has no CEL). Each failure names
//! the field and what is wrong.

use binlogstream_api::{
    output::{Oversize, PartitionKey},
    pattern::Pattern,
    start::StartFrom,
};

use crate::crd::{BinlogStreamSpec, TlsMode, TlsSpec};

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

// The grammars are the publisher's own (binlogstream-api): the operator refuses exactly what
// the publisher would refuse at start, with the same reason.

fn check_pattern(field: &str, p: &str) -> Result<(), Invalid> {
    p.parse::<Pattern>()
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}

fn check_start(start: &str) -> Result<(), Invalid> {
    start
        .parse::<StartFrom>()
        .map(|_| ())
        .map_err(|e| invalid("spec.start", e.to_string()))
}

/// The publisher's rules (`publisher/src/source/tls.rs`), checked here so a wrong spec is
/// InvalidSpec naming the field instead of a crash-looping pod.
fn check_tls(tls: &TlsSpec) -> Result<(), Invalid> {
    let set = [
        ("spec.source.tls.ca", tls.ca.is_some()),
        (
            "spec.source.tls.clientCertSecretName",
            tls.client_cert_secret_name.is_some(),
        ),
        ("spec.source.tls.serverName", tls.server_name.is_some()),
    ];
    if tls.mode == TlsMode::Disabled {
        if let Some((field, _)) = set.iter().find(|(_, on)| *on) {
            return Err(invalid(
                field,
                "is set but spec.source.tls.mode is disabled; set mode to required or \
                 verify-identity",
            ));
        }
    }
    if let Some(ca) = &tls.ca {
        if tls.mode == TlsMode::Required {
            return Err(invalid(
                "spec.source.tls.ca",
                "only makes sense with mode verify-identity (required does not check the \
                 certificate)",
            ));
        }
        let named = |n: &Option<String>| n.as_deref().is_some_and(|n| !n.is_empty());
        if named(&ca.secret_name) == named(&ca.config_map_name) {
            return Err(invalid(
                "spec.source.tls.ca",
                "needs exactly one of secretName and configMapName",
            ));
        }
        if ca.key.is_empty() {
            return Err(invalid("spec.source.tls.ca.key", "must not be empty"));
        }
    }
    if tls.client_cert_secret_name.as_deref() == Some("") {
        return Err(invalid(
            "spec.source.tls.clientCertSecretName",
            "must not be empty",
        ));
    }
    if let Some(name) = &tls.server_name {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(invalid(
                "spec.source.tls.serverName",
                format!("`{name}` is not a host name"),
            ));
        }
    }
    Ok(())
}

/// `*` matches any run of characters, as in the publisher's table filter.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    match pat.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

fn captured(spec: &BinlogStreamSpec, table: &str) -> bool {
    let m = |p: &String| glob(p.as_bytes(), table.as_bytes());
    (spec.tables.include.is_empty() || spec.tables.include.iter().any(m))
        && !spec.tables.exclude.iter().any(m)
}

fn check_request_id(field: &str, id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(invalid(
            field,
            format!("`{id}` is not 1-63 of A-Za-z0-9._- starting with a letter or digit"),
        ));
    }
    Ok(())
}

fn check_requests(spec: &BinlogStreamSpec) -> Result<(), Invalid> {
    if let Some(r) = &spec.snapshot {
        check_request_id("spec.snapshot.requestId", &r.request_id)?;
        if r.request_id == "initial" {
            return Err(invalid(
                "spec.snapshot.requestId",
                "`initial` names the snapshot of spec.start: snapshot; choose another id",
            ));
        }
        if r.tables.is_empty() {
            return Err(invalid("spec.snapshot.tables", "names no table"));
        }
        for (i, t) in r.tables.iter().enumerate() {
            let field = format!("spec.snapshot.tables[{i}]");
            match t.split_once('.') {
                Some((a, b))
                    if !a.is_empty()
                        && !b.is_empty()
                        && !b.contains('.')
                        && !t.contains(['*', ',', ' ']) => {}
                _ => {
                    return Err(invalid(
                        &field,
                        format!("`{t}` is not SCHEMA.TABLE (no wildcards)"),
                    ))
                }
            }
            if !captured(spec, t) {
                return Err(invalid(
                    &field,
                    format!("`{t}` is not captured by spec.tables (include it first)"),
                ));
            }
        }
    }
    if let Some(r) = &spec.checkpoint_request {
        check_request_id("spec.checkpointRequest.requestId", &r.request_id)?;
        super::requests::parse_target(&r.to)
            .map_err(|e| invalid("spec.checkpointRequest.to", e))?;
    }
    Ok(())
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
        check_tls(tls)?;
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
        pk.parse::<PartitionKey>()
            .map_err(|e| invalid("spec.target.partitionKey", e))?;
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
        o.parse::<Oversize>()
            .map_err(|e| invalid("spec.output.oversize", e))?;
    }
    if spec.lag.threshold_seconds < 1 {
        return Err(invalid("spec.lag.thresholdSeconds", "must be at least 1"));
    }
    check_requests(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tls: serde_json::Value) -> BinlogStreamSpec {
        serde_json::from_value(serde_json::json!({
            "source": {"host": "db", "user": "repl",
                       "passwordSecretRef": {"name": "db-pw", "key": "password"}, "tls": tls},
            "target": {"stream": "s"}
        }))
        .expect("spec")
    }

    fn error(tls: serde_json::Value) -> String {
        validate(&spec(tls)).expect_err("invalid").to_string()
    }

    #[test]
    fn tls_files_need_a_mode_that_uses_them() {
        assert_eq!(
            error(serde_json::json!({"ca": {"secretName": "ca"}})),
            "spec.source.tls.ca: is set but spec.source.tls.mode is disabled; set mode to \
             required or verify-identity"
        );
        assert!(
            error(serde_json::json!({"mode": "disabled", "clientCertSecretName": "c"}))
                .starts_with("spec.source.tls.clientCertSecretName: is set but")
        );
        assert!(error(serde_json::json!({"serverName": "db"}))
            .starts_with("spec.source.tls.serverName: is set but"));
        assert_eq!(
            error(serde_json::json!({"mode": "required", "ca": {"secretName": "ca"}})),
            "spec.source.tls.ca: only makes sense with mode verify-identity (required does \
             not check the certificate)"
        );
    }

    #[test]
    fn the_ca_reference_names_exactly_one_source() {
        let both = serde_json::json!({"mode": "verify-identity",
            "ca": {"secretName": "a", "configMapName": "b"}});
        assert_eq!(
            error(both),
            "spec.source.tls.ca: needs exactly one of secretName and configMapName"
        );
        let neither = serde_json::json!({"mode": "verify-identity", "ca": {"key": "ca.crt"}});
        assert!(error(neither).contains("exactly one"));
        let no_key =
            serde_json::json!({"mode": "verify-identity", "ca": {"secretName": "a", "key": ""}});
        assert_eq!(error(no_key), "spec.source.tls.ca.key: must not be empty");
        assert!(
            error(serde_json::json!({"mode": "required", "serverName": "a b"}))
                .starts_with("spec.source.tls.serverName: `a b` is not a host name")
        );
    }

    fn with(extra: serde_json::Value) -> Result<(), String> {
        let mut v = serde_json::json!({
            "source": {"host": "db", "user": "repl",
                       "passwordSecretRef": {"name": "db-pw", "key": "password"}},
            "target": {"stream": "s"},
            "tables": {"include": ["shop.*"], "exclude": ["shop.secret*"]}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        validate(&serde_json::from_value(v).expect("spec")).map_err(|e| e.to_string())
    }

    #[test]
    fn requests_name_the_field_that_is_wrong() {
        use serde_json::json;
        assert_eq!(with(json!({"start": "snapshot"})), Ok(()));
        assert_eq!(
            with(json!({"snapshot": {"requestId": "re-1", "tables": ["shop.orders"]}})),
            Ok(())
        );
        assert_eq!(
            with(json!({"snapshot": {"requestId": "re-1", "tables": ["other.t"]}})),
            Err("spec.snapshot.tables[0]: `other.t` is not captured by spec.tables (include it first)".into())
        );
        assert!(
            with(json!({"snapshot": {"requestId": "re-1", "tables": ["shop.orders", "shop.secret_keys"]}}))
                .expect_err("excluded")
                .starts_with("spec.snapshot.tables[1]:")
        );
        assert!(
            with(json!({"snapshot": {"requestId": "re-1", "tables": ["shop.*"]}}))
                .expect_err("wildcard")
                .starts_with("spec.snapshot.tables[0]: `shop.*` is not SCHEMA.TABLE")
        );
        assert!(
            with(json!({"snapshot": {"requestId": "initial", "tables": ["shop.orders"]}}))
                .expect_err("reserved")
                .starts_with("spec.snapshot.requestId:")
        );
        assert!(
            with(json!({"snapshot": {"requestId": "re 1", "tables": ["shop.orders"]}}))
                .expect_err("space")
                .starts_with("spec.snapshot.requestId:")
        );
        assert!(with(json!({"snapshot": {"requestId": "r", "tables": []}}))
            .expect_err("empty")
            .starts_with("spec.snapshot.tables:"));
        for to in ["binlog.000003:4", "latest", "snapshot", "gtid:0-1-5,1-2-3"] {
            assert_eq!(
                with(json!({"checkpointRequest": {"requestId": "mv-1", "to": to}})),
                Ok(()),
                "{to}"
            );
        }
        for to in ["binlog.000003:2", "earliest", "gtid:0-1", "nowhere"] {
            assert!(
                with(json!({"checkpointRequest": {"requestId": "mv-1", "to": to}}))
                    .expect_err(to)
                    .starts_with("spec.checkpointRequest.to:"),
                "{to}"
            );
        }
    }

    #[test]
    fn valid_tls_specs_pass() {
        for tls in [
            serde_json::json!({"mode": "required", "clientCertSecretName": "c"}),
            serde_json::json!({"mode": "verify-identity"}),
            serde_json::json!({"mode": "verify-identity", "ca": {"configMapName": "rds"},
                "serverName": "db.internal", "clientCertSecretName": "c"}),
        ] {
            assert_eq!(validate(&spec(tls.clone())), Ok(()), "{tls}");
        }
        // The old PascalCase and verify-ca spellings are refused by the schema's enum.
        let old = serde_json::json!({"source": {"host": "db", "user": "u",
            "passwordSecretRef": {"name": "p", "key": "k"}, "tls": {"mode": "VerifyCA"}},
            "target": {"stream": "s"}});
        assert!(serde_json::from_value::<BinlogStreamSpec>(old).is_err());
    }

    fn spec_with(extra: serde_json::Value) -> BinlogStreamSpec {
        let mut v = serde_json::json!({
            "source": {"host": "db", "user": "repl",
                       "passwordSecretRef": {"name": "db-pw", "key": "password"}},
            "target": {"stream": "s"}
        });
        for (k, x) in extra.as_object().expect("object") {
            match (v.get_mut(k), x) {
                (Some(serde_json::Value::Object(o)), serde_json::Value::Object(add)) => {
                    o.extend(add.clone())
                }
                _ => {
                    v[k] = x.clone();
                }
            }
        }
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn starts_are_checked_with_the_publishers_grammar() {
        for ok in [
            "latest",
            "earliest",
            "snapshot",
            "mysql-bin.000003:4",
            "gtid:0-1-42,2-5-7",
            // Refused before the grammar was shared: a MySQL GTID set.
            "gtid:3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7",
        ] {
            assert_eq!(
                validate(&spec_with(serde_json::json!({"start": ok}))),
                Ok(()),
                "{ok}"
            );
        }
        let e = validate(&spec_with(serde_json::json!({"start": "binlog.000001:2"})))
            .expect_err("pos 2");
        assert_eq!(e.field, "spec.start");
        assert!(e.message.contains("positions start at 4"), "{e}");
        let e = validate(&spec_with(serde_json::json!({"start": "gtid:0-1-2,0-1-3"})))
            .expect_err("domain twice");
        assert!(e.message.contains("domain 0 twice"), "{e}");
    }

    #[test]
    fn patterns_keys_and_oversize_use_the_publishers_grammar() {
        let e = validate(&spec_with(
            serde_json::json!({"tables": {"include": ["shop.*", "a.b.c"]}}),
        ))
        .expect_err("pattern");
        assert_eq!(e.field, "spec.tables.include[1]");
        assert!(e.message.contains("`a.b.c`"), "{e}");
        let e = validate(&spec_with(
            serde_json::json!({"target": {"partitionKey": "constant:"}}),
        ))
        .expect_err("key");
        assert_eq!(e.field, "spec.target.partitionKey");
        assert!(e.message.contains("1 to 256 characters"), "{e}");
        let e = validate(&spec_with(
            serde_json::json!({"output": {"oversize": "drop"}}),
        ))
        .expect_err("oversize");
        assert_eq!(
            e.to_string(),
            "spec.output.oversize: `drop` is not fail, skip or key-only"
        );
        assert_eq!(
            validate(&spec_with(
                serde_json::json!({"target": {"partitionKey": "constant:x"},
                "output": {"oversize": "key-only"}})
            )),
            Ok(())
        );
    }
}
