//! The BinlogStream API shared by the publisher and the operator: the resource's types and
//! field-manager names ([`crd`]), and the one grammar both sides parse, so the operator refuses
//! at reconcile time exactly what the publisher would refuse at start. Depends only on serde,
//! schemars, k8s-openapi and kube-core: no client, no runtime.

pub mod crd;
pub mod mysql_gtid;
pub mod output;
pub mod pattern;
pub mod start;
pub mod tls;
