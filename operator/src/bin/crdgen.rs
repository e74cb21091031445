//! Prints the CustomResourceDefinition; CI compares it with `crds/binlogstream.yaml`.
use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    print!(
        "{}",
        serde_yaml::to_string(&operator::crd::BinlogStream::crd())?
    );
    Ok(())
}
