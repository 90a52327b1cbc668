//! The local node (`scripts/dev-cluster up --node`: containerd, the kubelet, a CNI
//! bridge, kube-proxy) and the operator's image built here (`scripts/image`, what
//! `make image` runs): what the pod tests install the chart onto.
//!
//! Like the control plane, nothing here skips: when the node cannot start or the
//! image cannot be built, every test that needs them fails with the scripts' own
//! explanation.

use super::cluster::run_script;
use super::{cluster, repo_root};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The node's name, as `scripts/lib/dev-node.sh` registers it.
pub const NODE_NAME: &str = "anypost-dev-node";

/// The running node and the operator image imported into it.
#[derive(Debug)]
pub struct Node {
    /// `localhost/anypost-operator`: the chart's `image.repository`.
    pub image_repository: String,
    /// The chart's `image.tag`.
    pub image_tag: String,
    /// The OCI archive `scripts/image` built and imported.
    pub image_archive: PathBuf,
}

impl Node {
    /// `repository:tag`, as pods report their image.
    pub fn image(&self) -> String {
        format!("{}:{}", self.image_repository, self.image_tag)
    }
}

/// The node with the operator's image, started and built by the first caller in
/// this test run (after the control plane). Panics with the reason when that fails.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Result<Node, String>> = OnceLock::new();
    match NODE.get_or_init(start) {
        Ok(n) => n,
        Err(e) => panic!("the local node is not available:\n{e}"),
    }
}

fn start() -> Result<Node, String> {
    cluster();
    run_script("scripts/dev-cluster", &["up", "--node"])?;
    // The binary under test goes into the image when it is static (`make test`
    // builds it so); scripts/image builds the release binary otherwise.
    let out = run_script(
        "scripts/image",
        &["--binary", env!("CARGO_BIN_EXE_anypost-operator")],
    )?;
    let reference = out
        .lines()
        .last()
        .ok_or_else(|| format!("scripts/image printed no image reference:\n{out}"))?;
    let (repository, tag) = reference
        .rsplit_once(':')
        .ok_or_else(|| format!("scripts/image printed {reference:?}, not repository:tag"))?;
    let image_archive = repo_root().join(format!("target/image/anypost-operator-{tag}.tar"));
    if !image_archive.exists() {
        return Err(format!(
            "scripts/image built {reference} but {} is missing",
            image_archive.display()
        ));
    }
    Ok(Node {
        image_repository: repository.to_string(),
        image_tag: tag.to_string(),
        image_archive,
    })
}
