//! Getting a container's image onto a node (SPEC §11): the pull policy decides whether the node
//! asks its registry, an [`AuthSource`] gives the credentials that travel with the pull, and a
//! failure becomes one [`ImageError`] naming node, image, registry and cause.
//!
//! Credentials are handed to the transport per call and dropped after it: nothing here stores,
//! logs or prints them.
//!
//! Without a registry, [`copy_image`] streams an image from one engine into others (`fleetctl
//! image push`), and `pull: fleet` makes [`make_present`] do so when the registry cannot serve
//! a node.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use serde::Serialize;

use crate::container::{PullProgress, RegistryAuth};
use crate::manifest::{DesiredFleet, PullPolicy};
use crate::registry::Credentials;
use crate::transport::{ErrorKind, NodeRuntime, RegistryCause, TransportError};

/// Where the credentials of a pull come from (the fleet's `registries`, the operator's docker
/// configuration). `Debug` must never show a secret.
#[async_trait::async_trait]
pub trait AuthSource: Send + Sync + fmt::Debug {
    /// The credentials for `image`'s registry; `None` when there are none (anonymous pull).
    ///
    /// # Errors
    /// Credentials exist but cannot be read (a password file missing, a credential helper
    /// failing): a message naming the registry and where they were looked for, never a secret.
    async fn auth_for(&self, image: &str) -> Result<Option<RegistryAuth>, String>;
}

/// No credentials anywhere: every pull is anonymous.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

#[async_trait::async_trait]
impl AuthSource for NoAuth {
    async fn auth_for(&self, _: &str) -> Result<Option<RegistryAuth>, String> {
        Ok(None)
    }
}

/// The credentials of one apply or controller pass ([`Credentials`]). A registry of the
/// manifests whose password cannot be read fails the images of that registry only, saying why;
/// a Docker config that cannot be read fails the images of the registries it would be asked
/// for.
#[derive(Debug, Clone)]
pub struct FleetAuth {
    credentials: Result<Arc<Credentials>, String>,
    /// Manifest registries whose password could not be read, by host, with why.
    unreadable: BTreeMap<String, String>,
}

#[async_trait::async_trait]
impl AuthSource for FleetAuth {
    async fn auth_for(&self, image: &str) -> Result<Option<RegistryAuth>, String> {
        let host = crate::registry::registry_host(image);
        if let Some(why) = self.unreadable.get(crate::registry::canonical_host(&host)) {
            return Err(why.clone());
        }
        let credentials = self.credentials.clone()?;
        let image = image.to_string();
        // A credential helper is a program that may take its time: off the async threads.
        tokio::task::spawn_blocking(move || credentials.for_image(&image))
            .await
            .map_err(|e| format!("credential lookup failed: {e}"))?
            .map_err(|e| e.to_string())
    }
}

/// The credentials of `fleet`'s pulls: its `registries`, then the operator's Docker
/// configuration (`$DOCKER_CONFIG`, else `~/.docker`). Loaded now (manifest passwords read);
/// the Docker config is consulted per registry when an image needs it.
pub fn fleet_auth(fleet: &DesiredFleet) -> Arc<dyn AuthSource> {
    let mut readable = Vec::new();
    let mut unreadable = BTreeMap::new();
    for r in &fleet.fleet.registries {
        match Credentials::load(std::slice::from_ref(r), None) {
            Ok(_) => readable.push(r.clone()),
            Err(e) => {
                unreadable.insert(
                    crate::registry::canonical_host(&r.host).to_string(),
                    e.to_string(),
                );
            }
        }
    }
    let dir = crate::registry::docker_config_dir(&crate::registry::process_env);
    Arc::new(FleetAuth {
        credentials: Credentials::load(&readable, dir)
            .map(Arc::new)
            .map_err(|e| e.to_string()),
        unreadable,
    })
}

/// What making an image present did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// The node already held it.
    Present,
    /// It was pulled.
    Pulled,
    /// Its registry could not serve the node (`pull: fleet`), so it was copied from the node
    /// named here.
    Copied {
        /// The node it came from.
        from: String,
        /// Why the pull failed.
        pull_failure: String,
    },
}

/// An image a node does not have and could not get.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The registry (or the node's way to it) refused the pull.
    #[error("node {node}: image {image} cannot be pulled: {cause}")]
    Pull {
        /// Node.
        node: String,
        /// Image reference.
        image: String,
        /// The registry's refusal (cause and host), when it was the registry's.
        registry: Option<(RegistryCause, String)>,
        /// In words: cause, registry and what the engine said.
        cause: String,
    },
    /// `pull: never` and the node lacks the image.
    #[error("node {node}: image {image} is not on the node, and its pull policy is never")]
    Absent {
        /// Node.
        node: String,
        /// Image reference.
        image: String,
    },
    /// Asking the node whether it holds the image failed (the node, not the registry).
    #[error("node {node}: image {image}: cannot check whether it is present: {cause}")]
    Check {
        /// Node.
        node: String,
        /// Image reference.
        image: String,
        /// What the transport said.
        cause: String,
    },
    /// The credentials for the image's registry could not be read.
    #[error("image {image}: {cause}")]
    Credentials {
        /// Image reference.
        image: String,
        /// Which registry, and where the credentials were looked for.
        cause: String,
    },
    /// `pull: fleet`: neither the registry nor another node could give the node the image.
    #[error(
        "node {node}: image {image} cannot be pulled ({pull}) nor copied from another node ({copy})"
    )]
    Fleet {
        /// Node.
        node: String,
        /// Image reference.
        image: String,
        /// Why the pull failed (registry and cause).
        pull: String,
        /// Why the copy failed: no node has it (and where it looked), or the load's failure.
        copy: String,
    },
}

impl ImageError {
    /// Whether trying again can help without anyone changing anything: the node or the way to
    /// the registry failed, as opposed to an answer (no such tag, credentials refused, not on
    /// the node under `never`, credentials unreadable).
    pub fn is_transient(&self) -> bool {
        match self {
            ImageError::Check { .. } => true,
            ImageError::Pull { registry, .. } => {
                matches!(registry, None | Some((RegistryCause::Unreachable, _)))
            }
            _ => false,
        }
    }

    fn pull(node: &str, image: &str, e: TransportError) -> ImageError {
        let registry = match e.kind {
            ErrorKind::Registry(cause) => Some((cause, crate::registry::registry_host(image))),
            _ => None,
        };
        ImageError::Pull {
            node: node.to_string(),
            image: image.to_string(),
            registry,
            cause: e.message,
        }
    }
}

/// Makes `image` present on the node of `rt` as `pull` says, with the credentials `auth` has for
/// its registry; `progress` hears the pull's layers and bytes.
///
/// `peers` are the fleet's other engines (the node of `rt` among them is skipped): with
/// `pull: fleet`, when the pull fails, the first of them that holds the image is copied from
/// ([`copy_image`]). Other policies never look at them.
///
/// # Errors
/// [`ImageError`]: the node lacks the image and may not or could not pull it; with
/// `pull: fleet`, [`ImageError::Fleet`] says why the pull and why the copy failed.
pub async fn make_present(
    rt: &dyn NodeRuntime,
    image: &str,
    pull: PullPolicy,
    auth: &dyn AuthSource,
    peers: &[&dyn NodeRuntime],
    progress: &(dyn Fn(PullProgress) + Send + Sync),
) -> Result<Made, ImageError> {
    match (pull_present(rt, image, pull, auth, progress).await, pull) {
        (
            Err(e @ (ImageError::Pull { .. } | ImageError::Credentials { .. })),
            PullPolicy::Fleet,
        ) => copy_from_peer(rt, image, peers, e, progress).await,
        (result, _) => result,
    }
}

/// `pull: fleet` after a failed pull: the image copied from the first of `peers` that holds it.
async fn copy_from_peer(
    rt: &dyn NodeRuntime,
    image: &str,
    peers: &[&dyn NodeRuntime],
    pull_error: ImageError,
    progress: &(dyn Fn(PullProgress) + Send + Sync),
) -> Result<Made, ImageError> {
    let node = rt.node();
    // Said once: the pull's cause without the node and image the whole error names already.
    let pull = match &pull_error {
        ImageError::Pull { cause, .. } | ImageError::Credentials { cause, .. } => cause.clone(),
        other => other.to_string(),
    };
    let fail = |copy: String| ImageError::Fleet {
        node: node.to_string(),
        image: image.to_string(),
        pull: pull.clone(),
        copy,
    };
    let others: Vec<&dyn NodeRuntime> =
        peers.iter().copied().filter(|p| p.node() != node).collect();
    let Some(source) = find_holder(&others, image).await else {
        let looked: Vec<&str> = others.iter().map(|p| p.node()).collect();
        return Err(fail(if looked.is_empty() {
            "there is no other node".to_string()
        } else {
            format!("no other node has it; looked on {}", looked.join(", "))
        }));
    };
    let on_bytes = |p: CopyProgress| {
        progress(PullProgress {
            layers_done: 0,
            layers: 0,
            bytes_done: p.bytes,
            bytes: 0,
        })
    };
    let outcome = copy_image(source, &[rt], image, &on_bytes)
        .await
        .map_err(|e| fail(e.to_string()))?;
    match outcome.into_iter().next().map(|o| o.result) {
        Some(Ok(_)) => Ok(Made::Copied {
            from: source.node().to_string(),
            pull_failure: pull,
        }),
        Some(Err(e)) => Err(fail(e.to_string())),
        None => Err(fail("the copy had no target".to_string())),
    }
}

/// The first of `runtimes` (in order) that holds `image`; one that cannot be asked counts as
/// not holding it. Asked in parallel.
pub async fn find_holder<'a>(
    runtimes: &[&'a dyn NodeRuntime],
    image: &str,
) -> Option<&'a dyn NodeRuntime> {
    let present = crate::observe::on_nodes(runtimes.iter().map(|rt| rt.image_present(image))).await;
    runtimes
        .iter()
        .zip(present)
        .find_map(|(rt, p)| matches!(p, Ok(true)).then_some(*rt))
}

/// [`make_present`] without the fleet: present, or pulled as `pull` says.
async fn pull_present(
    rt: &dyn NodeRuntime,
    image: &str,
    pull: PullPolicy,
    auth: &dyn AuthSource,
    progress: &(dyn Fn(PullProgress) + Send + Sync),
) -> Result<Made, ImageError> {
    let node = rt.node();
    if pull != PullPolicy::Always {
        let present = rt
            .image_present(image)
            .await
            .map_err(|e| ImageError::Check {
                node: node.to_string(),
                image: image.to_string(),
                cause: e.message,
            })?;
        match (present, pull) {
            (true, _) => return Ok(Made::Present),
            (false, PullPolicy::Never) => {
                return Err(ImageError::Absent {
                    node: node.to_string(),
                    image: image.to_string(),
                });
            }
            _ => {}
        }
    }
    let credentials = auth
        .auth_for(image)
        .await
        .map_err(|cause| ImageError::Credentials {
            image: image.to_string(),
            cause,
        })?;
    rt.pull_image(image, credentials.as_ref(), progress)
        .await
        .map_err(|e| ImageError::pull(node, image, e))?;
    Ok(Made::Pulled)
}

/// How a pass treats the digests image tags are pinned to (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Refresh {
    /// Recorded digests hold; an image without one is resolved once (the controller's passes).
    #[default]
    Recorded,
    /// As `Recorded`, and images whose pull policy is `always` are resolved anew (an apply).
    Policy,
    /// Every image is resolved anew (`--refresh`): tags that moved move the fleet.
    All,
}

impl Refresh {
    /// An apply's or a plan's: [`Refresh::All`] with `--refresh`, else [`Refresh::Policy`].
    pub fn asked(refresh: bool) -> Refresh {
        if refresh {
            Refresh::All
        } else {
            Refresh::Policy
        }
    }
}

/// One image's digest in a pass: what was recorded, what the containers run, what its
/// registry said now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePin {
    /// Image as the manifests name it.
    pub image: String,
    /// The digest recorded before this pass (`None`: never resolved; `""`: its registry could
    /// not say, and it runs by tag until `--refresh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    /// What the registry answered now, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// Why it could not be asked or did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The digest the fleet runs it as in this pass (`None`: by tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// What to record after this pass, when it changes.
    #[serde(skip)]
    pub record: Option<String>,
}

impl ImagePin {
    /// Whether the registry now serves another digest than the one recorded.
    pub fn moved(&self) -> bool {
        matches!((&self.recorded, &self.resolved), (Some(r), Some(n)) if !r.is_empty() && r != n)
    }
}

/// The digests of a pass, by image, and how each was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImagePins {
    /// Every image the manifests name, except `pull: never` ones.
    pub images: Vec<ImagePin>,
}

impl ImagePins {
    /// Image → digest, for [`crate::manifest::DesiredFleet::with_digests`].
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.images
            .iter()
            .filter_map(|p| Some((p.image.clone(), p.pinned.clone()?)))
            .collect()
    }
}

/// What the fleet's containers run now, for one image tag of the manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Running {
    /// Digests they are pinned to (labels), with how many run each.
    pub digests: BTreeMap<String, usize>,
    /// Some run the tag unpinned (made before digests, or while the registry could not say).
    pub by_tag: bool,
}

/// Pins each image of `fleet` to a digest and says what to record:
/// - a recorded digest holds, unless `refresh` asks the registry again (every image with
///   [`Refresh::All`], `pull: always` ones with [`Refresh::Policy`]);
/// - an image never recorded takes the digest its containers already run (`running`), or runs
///   by tag when they run it unpinned — nothing is replaced for want of a record, and no
///   registry is asked; only an image no container runs yet is looked up;
/// - a lookup goes through the engines of `nodes` (reachable ones, in order) until one answers
///   for the registry (a node that cannot reach it hands over to the next), with the
///   credentials of `auth`; lookups of different images run in parallel;
/// - a first lookup that fails is recorded as "by tag" (`""`), so later applies do not ask
///   again until `--refresh`; a failed refresh keeps the recorded digest.
///
/// Nothing is pulled or recorded here.
pub async fn resolve(
    fleet: &DesiredFleet,
    runtimes: &crate::execute::Runtimes,
    nodes: &[&str],
    recorded: &BTreeMap<String, String>,
    running: &BTreeMap<String, Running>,
    refresh: Refresh,
    auth: &dyn AuthSource,
) -> ImagePins {
    let rts: Vec<&Arc<dyn NodeRuntime>> = nodes.iter().filter_map(|n| runtimes.get(*n)).collect();
    let rts = &rts;
    let lookups = fleet
        .images()
        .into_iter()
        // `never`: only what the nodes hold; `fleet`: a copy between engines carries the
        // image's tag, not a registry digest — both run by tag.
        .filter(|(_, pull)| !matches!(pull, PullPolicy::Never | PullPolicy::Fleet))
        .map(|(image, pull)| async move {
            let recorded = recorded.get(image).cloned();
            let mut pin = ImagePin {
                image: image.to_string(),
                pinned: recorded.clone().filter(|d| !d.is_empty()),
                recorded: recorded.clone(),
                resolved: None,
                error: None,
                record: None,
            };
            let asked = match refresh {
                Refresh::All => true,
                Refresh::Policy => pull == PullPolicy::Always,
                Refresh::Recorded => false,
            };
            if !asked && recorded.is_some() {
                return pin;
            }
            // Most containers' digest; ties go to the greatest, so every actor picks alike.
            let now = running.get(image);
            let running_digest = now
                .and_then(|r| r.digests.iter().max_by_key(|(d, n)| (*n, *d)))
                .map(|(d, _)| d.clone());
            if !asked && let Some(now) = now {
                if let Some(digest) = running_digest {
                    pin.pinned = Some(digest.clone());
                    pin.record = Some(digest);
                    return pin;
                }
                if now.by_tag {
                    return pin;
                }
            }
            let answer = tokio::time::timeout(LOOKUP_TIMEOUT, lookup(rts, image, auth))
                .await
                .unwrap_or_else(|_| {
                    Err(Lookup {
                        error: format!(
                            "image {image}: its registry gave no answer within {}s",
                            LOOKUP_TIMEOUT.as_secs()
                        ),
                        answered: false,
                    })
                });
            match answer {
                Ok(digest) => {
                    pin.pinned = Some(digest.clone());
                    pin.record =
                        (pin.recorded.as_deref() != Some(digest.as_str())).then(|| digest.clone());
                    pin.resolved = Some(digest);
                }
                Err(Lookup { error, answered }) => {
                    pin.error = Some(error);
                    if pin.recorded.is_none() {
                        if let Some(digest) = running_digest {
                            // Asked (a refresh) and not answered: what runs stays pinned.
                            pin.pinned = Some(digest.clone());
                            pin.record = Some(digest);
                        } else if !answered && !now.is_some_and(|r| r.by_tag) {
                            // No node reached the registry: by tag, not asked again until
                            // `--refresh`. A registry that answered (no such tag, credentials
                            // refused) is asked again by the next apply: the operator is about
                            // to fix it.
                            pin.record = Some(String::new());
                        }
                    }
                }
            }
            pin
        });
    ImagePins {
        images: futures_util::future::join_all(lookups).await,
    }
}

/// How long one image's lookup may take in all, across the nodes it is asked through: a
/// registry that drops packets must not hold an apply for a call timeout per node.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A lookup that failed.
#[derive(Debug)]
struct Lookup {
    error: String,
    /// The registry answered (or the credentials could not be read): not a matter of reach.
    answered: bool,
}

/// The digest `image`'s registry serves now, asked through the first of `rts` that reaches the
/// registry.
async fn lookup(
    rts: &[&Arc<dyn NodeRuntime>],
    image: &str,
    auth: &dyn AuthSource,
) -> Result<String, Lookup> {
    let credentials = auth.auth_for(image).await.map_err(|e| Lookup {
        error: format!("image {image}: {e}"),
        answered: true,
    })?;
    let mut last = format!("image {image}: no node to ask its registry through");
    let mut heard = false;
    for rt in rts {
        match rt.resolve_digest(image, credentials.as_ref()).await {
            Ok(digest) => return Ok(digest),
            // The registry's own answer: another node would hear the same.
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::Registry(RegistryCause::NotFound | RegistryCause::Unauthorized)
                ) =>
            {
                return Err(Lookup {
                    error: e.to_string(),
                    answered: true,
                });
            }
            // An engine that cannot ask (Podman) says less than one that tried.
            Err(e) if e.kind == ErrorKind::UnsupportedEngine => {
                if !heard {
                    last = e.to_string();
                }
            }
            Err(e) => {
                last = e.to_string();
                heard = true;
            }
        }
    }
    Err(Lookup {
        error: last,
        answered: false,
    })
}

/// How many targets one export feeds at once (see [`copy_image`]): a fleet's nodes are few,
/// and this bounds the connections and buffers one copy holds.
pub const COPY_FANOUT: usize = 8;
/// Chunks buffered per target between the export and that target's load. The export runs at
/// the pace of the slowest target; this only smooths the differences.
pub const COPY_BUFFER_CHUNKS: usize = 16;

/// Bytes sent to one target of a copy so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress<'a> {
    /// Target node.
    pub node: &'a str,
    /// Bytes of the archive sent to it.
    pub bytes: u64,
}

/// How one target of a copy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Target node.
    pub node: String,
    /// What happened there.
    pub result: Result<Copied, CopyError>,
}

/// A target that has the image after a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// It had the image already; nothing was sent.
    Present,
    /// The archive was loaded into it.
    Loaded {
        /// Bytes sent.
        bytes: u64,
        /// Wall time of the transfer and load.
        elapsed: Duration,
    },
}

impl Copied {
    /// Throughput of a load in MB/s (10^6 bytes per second); `None` when nothing was sent.
    pub fn mb_per_s(&self) -> Option<f64> {
        match self {
            Copied::Loaded { bytes, elapsed } if !elapsed.is_zero() => {
                Some(*bytes as f64 / 1e6 / elapsed.as_secs_f64())
            }
            _ => None,
        }
    }
}

/// A copy that did not give a node the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// The source could not start the archive (it lacks the image, or cannot be reached).
    #[error("node {node}: image {image} cannot be exported: {cause}")]
    Export {
        /// Source node.
        node: String,
        /// Image reference.
        image: String,
        /// What the transport said.
        cause: String,
    },
    /// Asking a target whether it holds the image failed.
    #[error("node {node}: image {image}: cannot check whether it is present: {cause}")]
    Check {
        /// Target node.
        node: String,
        /// Image reference.
        image: String,
        /// What the transport said.
        cause: String,
    },
    /// The target did not load the archive, or the archive broke off at the source.
    #[error("node {node}: image {image} cannot be loaded from {source_node}: {cause}")]
    Load {
        /// Target node.
        node: String,
        /// Image reference.
        image: String,
        /// Source node.
        source_node: String,
        /// The engine's or the connection's words (naming the source when it was the source's).
        cause: String,
    },
    /// The archive loaded, but the target does not know the image by that reference: an
    /// archive carries tags, not registry digests, so `repository@sha256:…` cannot be copied.
    #[error(
        "node {node}: image {image} was loaded but the node does not know it by that name (an image archive carries tags, not registry digests)"
    )]
    Unnamed {
        /// Target node.
        node: String,
        /// Image reference.
        image: String,
    },
}

/// Streams `image` from the engine `from` into each of `to` that lacks it, over the
/// connections the runtimes already hold; `progress` hears the bytes sent per target.
///
/// One export feeds up to [`COPY_FANOUT`] targets at once: its chunks are shared
/// (reference-counted, not copied) into a bounded buffer per target
/// ([`COPY_BUFFER_CHUNKS`]), so the source is read once and sends the image once over its
/// link, however many targets there are; the price is that the slowest target paces the
/// others. One export per target would let each go at its own pace but read the source's
/// disk and (for a remote source) cross its link once per target — the scarcer resource when
/// the source is the operator's machine behind a home uplink. A target that fails drops out
/// without stopping the others. (Chosen by that reasoning; not yet measured side by side.)
///
/// # Guarantees
/// Never holds the archive whole in memory. A target that already has the image is left
/// alone ([`Copied::Present`]). Afterwards each target with [`Copied::Loaded`] knows the image
/// by `image` (checked).
///
/// # Errors
/// [`CopyError::Export`] when `from` cannot start the archive (none of `to` changed then,
/// and all are named in no outcome); otherwise one [`CopyOutcome`] per target, in the order of
/// `to`, each with its own failure.
pub async fn copy_image(
    from: &dyn NodeRuntime,
    to: &[&dyn NodeRuntime],
    image: &str,
    progress: &(dyn Fn(CopyProgress) + Send + Sync),
) -> Result<Vec<CopyOutcome>, CopyError> {
    let present = crate::observe::on_nodes(to.iter().map(|rt| rt.image_present(image))).await;
    let mut outcomes: Vec<Option<CopyOutcome>> = Vec::with_capacity(to.len());
    let mut lacking: Vec<(usize, &dyn NodeRuntime)> = Vec::new();
    for (i, (rt, p)) in to.iter().zip(present).enumerate() {
        let result = match p {
            Ok(true) => Ok(Copied::Present),
            Ok(false) => {
                lacking.push((i, *rt));
                outcomes.push(None);
                continue;
            }
            Err(e) => Err(CopyError::Check {
                node: rt.node().to_string(),
                image: image.to_string(),
                cause: e.message,
            }),
        };
        outcomes.push(Some(CopyOutcome {
            node: rt.node().to_string(),
            result,
        }));
    }
    for batch in lacking.chunks(COPY_FANOUT) {
        let loaded = copy_batch(from, batch, image, progress).await?;
        for ((i, _), outcome) in batch.iter().zip(loaded) {
            outcomes[*i] = Some(outcome);
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// One export of `image` from `from`, fed into every target of `batch` at once.
async fn copy_batch(
    from: &dyn NodeRuntime,
    batch: &[(usize, &dyn NodeRuntime)],
    image: &str,
    progress: &(dyn Fn(CopyProgress) + Send + Sync),
) -> Result<Vec<CopyOutcome>, CopyError> {
    let source = from.node();
    let mut export = from
        .export_image(image)
        .await
        .map_err(|e| CopyError::Export {
            node: source.to_string(),
            image: image.to_string(),
            cause: e.message,
        })?;
    let mut senders = Vec::with_capacity(batch.len());
    let mut loads = Vec::with_capacity(batch.len());
    for (_, rt) in batch {
        let (tx, rx) = tokio::sync::mpsc::channel(COPY_BUFFER_CHUNKS);
        senders.push(tx);
        let archive = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .boxed();
        loads.push(async move {
            let node = rt.node();
            let started = Instant::now();
            let sent = std::sync::atomic::AtomicU64::new(0);
            let on_bytes = |bytes: u64| {
                sent.store(bytes, std::sync::atomic::Ordering::Relaxed);
                progress(CopyProgress { node, bytes });
            };
            let fail = |cause: String| CopyError::Load {
                node: node.to_string(),
                image: image.to_string(),
                source_node: source.to_string(),
                cause,
            };
            let result = match rt.load_image(archive, &on_bytes).await {
                Err(e) if e.node != node => Err(fail(e.to_string())),
                Err(e) => Err(fail(e.message)),
                Ok(()) => match rt.image_present(image).await {
                    Ok(true) => Ok(Copied::Loaded {
                        bytes: sent.load(std::sync::atomic::Ordering::Relaxed),
                        elapsed: started.elapsed(),
                    }),
                    Ok(false) => Err(CopyError::Unnamed {
                        node: node.to_string(),
                        image: image.to_string(),
                    }),
                    Err(e) => Err(CopyError::Check {
                        node: node.to_string(),
                        image: image.to_string(),
                        cause: e.message,
                    }),
                },
            };
            CopyOutcome {
                node: node.to_string(),
                result,
            }
        });
    }
    // The tee: each chunk goes to every target still loading, at the slowest one's pace; a
    // target whose load ended (failed) has dropped its receiver and leaves the set. Dropping
    // the senders at the end closes every archive.
    let pump = async move {
        while let Some(chunk) = export.next().await {
            match chunk {
                Ok(bytes) => {
                    // A target that takes no chunk for the stall timeout is dropped (its archive
                    // ends short and its load fails): one stalled node never holds the others.
                    let sent = futures_util::future::join_all(senders.iter().map(|tx| {
                        tokio::time::timeout(
                            crate::transport::docker::TRANSFER_STALL_TIMEOUT,
                            tx.send(Ok(bytes.clone())),
                        )
                    }))
                    .await;
                    let mut still = sent.iter().map(|r| matches!(r, Ok(Ok(()))));
                    senders.retain(|_| still.next().unwrap_or(false));
                    if senders.is_empty() {
                        return;
                    }
                }
                Err(e) => {
                    for tx in &senders {
                        let copy =
                            TransportError::new(&e.node, e.op, e.kind.clone(), e.message.clone());
                        let _ = tx.send(Err(copy)).await;
                    }
                    return;
                }
            }
        }
    };
    let ((), outcomes) =
        futures_util::future::join(pump, futures_util::future::join_all(loads)).await;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::{FakeRegistry, FakeRuntime};

    #[derive(Debug)]
    struct Fixed(Option<RegistryAuth>);
    #[async_trait::async_trait]
    impl AuthSource for Fixed {
        async fn auth_for(&self, _: &str) -> Result<Option<RegistryAuth>, String> {
            Ok(self.0.clone())
        }
    }

    fn auth(password: &str) -> Fixed {
        Fixed(Some(RegistryAuth {
            server: "reg.example:5000".into(),
            username: "deploy".into(),
            password: password.into(),
            identity_token: None,
        }))
    }

    fn node_with(registry: &FakeRegistry, images: &[&str]) -> FakeRuntime {
        let rt = FakeRuntime::new("n1");
        rt.set_images(images);
        rt.set_registry(registry);
        rt
    }

    const IMG: &str = "reg.example:5000/aims/api:1";

    #[tokio::test]
    async fn a_podman_node_asked_first_hands_the_lookup_to_the_next_and_says_the_most() {
        let reg = FakeRegistry::new();
        reg.push(IMG, "sha256:aaa");
        let podman = FakeRuntime::new("n4");
        podman.set_registry(&reg);
        podman.set_engine_kind(crate::container::EngineKind::Podman);
        let docker = node_with(&reg, &[]);
        let (p, d): (Arc<dyn NodeRuntime>, Arc<dyn NodeRuntime>) =
            (Arc::new(podman), Arc::new(docker));
        assert_eq!(lookup(&[&p, &d], IMG, &NoAuth).await.unwrap(), "sha256:aaa");
        // Nobody can say: the Docker node's failure is the one told, not Podman's inability.
        reg.set_unreachable("reg.example:5000", true);
        let err = lookup(&[&p, &d], IMG, &NoAuth).await.unwrap_err();
        assert!(err.error.starts_with("node n1:"), "{}", err.error);
        assert!(!err.answered);
        let err = lookup(&[&p], IMG, &NoAuth).await.unwrap_err();
        assert!(err.error.contains("podman cannot ask"), "{}", err.error);
    }

    #[tokio::test]
    async fn missing_pulls_only_what_the_node_lacks_and_never_pulls_nothing() {
        let reg = FakeRegistry::new();
        reg.push(IMG, "sha256:aaa");
        let rt = node_with(&reg, &["local:1"]);
        let quiet = |_| {};
        assert_eq!(
            make_present(&rt, "local:1", PullPolicy::Missing, &NoAuth, &[], &quiet).await,
            Ok(Made::Present)
        );
        assert_eq!(
            make_present(&rt, IMG, PullPolicy::Missing, &NoAuth, &[], &quiet).await,
            Ok(Made::Pulled)
        );
        // Pulled once: present from now on.
        assert_eq!(
            make_present(&rt, IMG, PullPolicy::Missing, &NoAuth, &[], &quiet).await,
            Ok(Made::Present)
        );
        assert_eq!(
            make_present(&rt, "absent:1", PullPolicy::Never, &NoAuth, &[], &quiet).await,
            Err(ImageError::Absent {
                node: "n1".into(),
                image: "absent:1".into()
            })
        );
        assert!(
            !rt.calls()
                .iter()
                .any(|c| c.op == "pull" && c.object == "absent:1")
        );
        // Always pulls even what is present.
        assert_eq!(
            make_present(&rt, IMG, PullPolicy::Always, &NoAuth, &[], &quiet).await,
            Ok(Made::Pulled)
        );
    }

    #[tokio::test]
    async fn a_private_registry_wants_its_credentials_and_the_refusal_names_it() {
        let reg = FakeRegistry::new();
        reg.push(IMG, "sha256:aaa");
        reg.require_login("reg.example:5000", "deploy", "s3cret-pw");
        let rt = node_with(&reg, &["local:1"]);
        let quiet = |_| {};
        let err = make_present(&rt, IMG, PullPolicy::Missing, &NoAuth, &[], &quiet)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node n1: image reg.example:5000/aims/api:1 cannot be pulled: registry reg.example:5000: unauthorized (fake)"
        );
        assert!(matches!(
            err,
            ImageError::Pull {
                registry: Some((RegistryCause::Unauthorized, _)),
                ..
            }
        ));
        let err = make_present(&rt, IMG, PullPolicy::Missing, &auth("wrong"), &[], &quiet)
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("wrong"), "{err}");
        assert_eq!(
            make_present(
                &rt,
                IMG,
                PullPolicy::Missing,
                &auth("s3cret-pw"),
                &[],
                &quiet
            )
            .await,
            Ok(Made::Pulled)
        );
        let missing = "reg.example:5000/aims/api:404";
        let err = make_present(
            &rt,
            missing,
            PullPolicy::Missing,
            &auth("s3cret-pw"),
            &[],
            &quiet,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("registry reg.example:5000: not found"),
            "{err}"
        );
        reg.set_unreachable("reg.example:5000", true);
        let err = make_present(
            &rt,
            IMG,
            PullPolicy::Always,
            &auth("s3cret-pw"),
            &[],
            &quiet,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("registry reg.example:5000: unreachable"),
            "{err}"
        );
    }

    /// node1 and node2 hold `IMG`, node3 does not; the registry lacks it.
    fn fleet_of_three(registry: &FakeRegistry) -> [FakeRuntime; 3] {
        ["node1", "node2", "node3"].map(|n| {
            let rt = FakeRuntime::new(n);
            rt.set_registry(registry);
            rt.set_images(if n == "node3" {
                &["other:1"]
            } else {
                &["other:1", IMG]
            });
            rt
        })
    }

    fn archive_len(image: &str) -> u64 {
        (format!("fake-image-archive {image}\n").len()
            + crate::transport::fake::FAKE_ARCHIVE_CHUNKS
                * crate::transport::fake::FAKE_ARCHIVE_CHUNK) as u64
    }

    #[tokio::test]
    async fn copy_loads_the_image_into_each_target_that_lacks_it_and_leaves_the_others() {
        let reg = FakeRegistry::new();
        let [n1, n2, n3] = fleet_of_three(&reg);
        let n4 = FakeRuntime::new("node4");
        n4.set_images(&["other:1"]);
        let heard = std::sync::Mutex::new(BTreeMap::<String, u64>::new());
        let progress = |p: CopyProgress| {
            heard.lock().unwrap().insert(p.node.to_string(), p.bytes);
        };
        let outcomes = copy_image(&n1, &[&n2, &n3, &n4], IMG, &progress)
            .await
            .unwrap();
        let by_node: Vec<(&str, &Result<Copied, CopyError>)> = outcomes
            .iter()
            .map(|o| (o.node.as_str(), &o.result))
            .collect();
        assert_eq!(by_node[0], ("node2", &Ok(Copied::Present)));
        for (i, node) in [(1, "node3"), (2, "node4")] {
            assert_eq!(by_node[i].0, node);
            assert!(
                matches!(by_node[i].1, Ok(Copied::Loaded { bytes, .. }) if *bytes == archive_len(IMG)),
                "{:?}",
                by_node[i]
            );
        }
        assert!(n3.image_present(IMG).await.unwrap());
        assert!(n4.image_present(IMG).await.unwrap());
        // One export fed both targets; node2, which had it, was not sent anything.
        assert_eq!(n1.calls().iter().filter(|c| c.op == "export").count(), 1);
        assert!(!n2.calls().iter().any(|c| c.op == "load"));
        let heard = heard.into_inner().unwrap();
        assert_eq!(heard.get("node3"), Some(&archive_len(IMG)));
        assert_eq!(heard.get("node4"), Some(&archive_len(IMG)));
        assert!(!heard.contains_key("node2"));
    }

    #[tokio::test]
    async fn a_target_that_fails_does_not_stop_the_others() {
        let reg = FakeRegistry::new();
        let [n1, _, n3] = fleet_of_three(&reg);
        let down = FakeRuntime::new("node4");
        down.set_images(&["other:1"]);
        // Reachable for the presence check, failing the load (its first mutating call).
        down.fail_at_mutation(1);
        let outcomes = copy_image(&n1, &[&down, &n3], IMG, &|_| {}).await.unwrap();
        let err = outcomes[0].result.as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "node node4: image reg.example:5000/aims/api:1 cannot be loaded from node1:"
            ),
            "{err}"
        );
        assert!(err.contains("injected failure"), "{err}");
        assert!(matches!(outcomes[1].result, Ok(Copied::Loaded { .. })));
        assert!(n3.image_present(IMG).await.unwrap());
    }

    #[tokio::test]
    async fn a_source_without_the_image_is_an_export_error_and_nothing_is_sent() {
        let reg = FakeRegistry::new();
        let [_, n2, n3] = fleet_of_three(&reg);
        let err = copy_image(&n3, &[&n2, &n3], "absent:1", &|_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node node3: image absent:1 cannot be exported: reference does not exist: absent:1 (fake)"
        );
        assert!(!n2.calls().iter().any(|c| c.op == "load"));
    }

    #[tokio::test]
    async fn pull_fleet_copies_from_a_node_that_has_the_image_when_the_registry_lacks_it() {
        let reg = FakeRegistry::new();
        let [n1, n2, n3] = fleet_of_three(&reg);
        let peers: [&dyn NodeRuntime; 3] = [&n1, &n2, &n3];
        let made = make_present(&n3, IMG, PullPolicy::Fleet, &NoAuth, &peers, &|_| {})
            .await
            .unwrap();
        let Made::Copied { from, pull_failure } = made else {
            panic!("{made:?}");
        };
        assert_eq!(from, "node1");
        assert!(
            pull_failure.contains("registry reg.example:5000: not found"),
            "{pull_failure}"
        );
        assert!(n3.image_present(IMG).await.unwrap());
        // The registry was asked first.
        let ops: Vec<&str> = n3.calls().iter().map(|c| c.op).collect();
        let pull = ops.iter().position(|o| *o == "pull").unwrap();
        let load = ops.iter().position(|o| *o == "load").unwrap();
        assert!(pull < load, "{ops:?}");
        // Present now: the next make_present neither pulls nor copies.
        n3.clear_calls();
        assert_eq!(
            make_present(&n3, IMG, PullPolicy::Fleet, &NoAuth, &peers, &|_| {}).await,
            Ok(Made::Present)
        );
        assert!(n3.mutating_calls().is_empty());
    }

    #[tokio::test]
    async fn pull_fleet_that_neither_pulls_nor_copies_names_both_causes_once() {
        let reg = FakeRegistry::new();
        let [n1, n2, n3] = fleet_of_three(&reg);
        let peers: [&dyn NodeRuntime; 3] = [&n1, &n2, &n3];
        let missing = "reg.example:5000/aims/api:404";
        let err = make_present(&n3, missing, PullPolicy::Fleet, &NoAuth, &peers, &|_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node node3: image reg.example:5000/aims/api:404 cannot be pulled (registry \
             reg.example:5000: not found (fake)) nor copied from another node (no other node \
             has it; looked on node1, node2)"
        );
        assert_eq!(err.to_string().matches("not found").count(), 1, "{err}");
    }

    #[tokio::test]
    async fn only_pull_fleet_copies() {
        let reg = FakeRegistry::new();
        let [n1, n2, n3] = fleet_of_three(&reg);
        let peers: [&dyn NodeRuntime; 3] = [&n1, &n2, &n3];
        let err = make_present(&n3, IMG, PullPolicy::Missing, &NoAuth, &peers, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::Pull { .. }), "{err}");
        assert!(!n1.calls().iter().any(|c| c.op == "export"));
        assert!(!n3.image_present(IMG).await.unwrap());
    }

    #[test]
    fn debug_of_credentials_shows_no_password() {
        let shown = format!("{:?}", auth("s3cret-pw"));
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("deploy"), "{shown}");
    }

    fn fleet_with(images: &[(&str, &str)]) -> DesiredFleet {
        let mut text = String::from(
            "apiVersion: fleet/v1\nkind: Node\nmetadata: {name: n1}\nspec: {capacity: {cpus: 4, memory: 8GiB}}\n---\napiVersion: fleet/v1\nkind: Node\nmetadata: {name: n2}\nspec: {capacity: {cpus: 4, memory: 8GiB}}\n",
        );
        for (name, image) in images {
            text.push_str(&format!(
                "---\napiVersion: fleet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: '{image}', resources: {{memory: 16MiB}}}}\n"
            ));
        }
        crate::manifest::parse(&[crate::manifest::Source {
            name: "t.yaml".into(),
            text,
        }])
        .unwrap()
        .fleet
    }

    fn resolves(rt: &FakeRuntime) -> usize {
        rt.calls().iter().filter(|c| c.op == "resolve").count()
    }

    #[tokio::test]
    async fn a_tag_is_looked_up_only_when_nothing_records_or_runs_it() {
        let reg = FakeRegistry::new();
        reg.push("reg.example:5000/a:1", "sha256:aaa");
        reg.push("reg.example:5000/b:1", "sha256:bbb");
        reg.push("reg.example:5000/c:1", "sha256:ccc");
        let n1 = node_with(&reg, &[]);
        let runtimes: crate::execute::Runtimes = [(
            "n1".to_string(),
            Arc::new(n1.clone()) as Arc<dyn NodeRuntime>,
        )]
        .into();
        let f = fleet_with(&[
            ("a", "reg.example:5000/a:1"),
            ("b", "reg.example:5000/b:1"),
            ("c", "reg.example:5000/c:1"),
            ("d", "reg.example:5000/d:1"),
        ]);
        let recorded =
            BTreeMap::from([("reg.example:5000/a:1".to_string(), "sha256:old".to_string())]);
        // b runs pinned, c runs by tag (made before digests), d runs nowhere yet.
        let running = BTreeMap::from([
            (
                "reg.example:5000/b:1".to_string(),
                Running {
                    digests: BTreeMap::from([("sha256:bb0".to_string(), 2)]),
                    by_tag: false,
                },
            ),
            (
                "reg.example:5000/c:1".to_string(),
                Running {
                    digests: BTreeMap::new(),
                    by_tag: true,
                },
            ),
        ]);
        let pins = resolve(
            &f,
            &runtimes,
            &["n1"],
            &recorded,
            &running,
            Refresh::Policy,
            &NoAuth,
        )
        .await;
        let by: BTreeMap<&str, &ImagePin> =
            pins.images.iter().map(|p| (p.image.as_str(), p)).collect();
        assert_eq!(
            by["reg.example:5000/a:1"].pinned.as_deref(),
            Some("sha256:old"),
            "recorded holds"
        );
        assert_eq!(by["reg.example:5000/a:1"].record, None);
        assert_eq!(
            by["reg.example:5000/b:1"].pinned.as_deref(),
            Some("sha256:bb0"),
            "what runs is adopted"
        );
        assert_eq!(
            by["reg.example:5000/b:1"].record.as_deref(),
            Some("sha256:bb0")
        );
        assert_eq!(
            by["reg.example:5000/c:1"].pinned, None,
            "unpinned containers are not replaced"
        );
        assert_eq!(by["reg.example:5000/c:1"].record, None);
        // d is looked up: the registry has no such tag; nothing recorded (asked again next time).
        assert!(
            by["reg.example:5000/d:1"]
                .error
                .as_deref()
                .unwrap()
                .contains("not found")
        );
        assert_eq!(by["reg.example:5000/d:1"].record, None);
        assert_eq!(resolves(&n1), 1, "only d was looked up");

        // --refresh asks for every tag; a tag that moved says so.
        let pins = resolve(
            &f,
            &runtimes,
            &["n1"],
            &recorded,
            &running,
            Refresh::All,
            &NoAuth,
        )
        .await;
        let a = pins
            .images
            .iter()
            .find(|p| p.image == "reg.example:5000/a:1")
            .unwrap();
        assert!(a.moved());
        assert_eq!(a.pinned.as_deref(), Some("sha256:aaa"));
        assert_eq!(a.record.as_deref(), Some("sha256:aaa"));
        assert_eq!(resolves(&n1), 5);
    }

    #[tokio::test]
    async fn a_node_that_cannot_reach_the_registry_hands_the_lookup_to_the_next() {
        let reg = FakeRegistry::new();
        reg.push("reg.example:5000/a:1", "sha256:aaa");
        let n1 = node_with(&reg, &[]);
        let n2 = node_with(&reg, &[]);
        n1.set_unreachable(true);
        let runtimes: crate::execute::Runtimes = [
            ("n1".to_string(), Arc::new(n1) as Arc<dyn NodeRuntime>),
            ("n2".to_string(), Arc::new(n2) as Arc<dyn NodeRuntime>),
        ]
        .into();
        let f = fleet_with(&[("a", "reg.example:5000/a:1")]);
        let pins = resolve(
            &f,
            &runtimes,
            &["n1", "n2"],
            &BTreeMap::new(),
            &BTreeMap::new(),
            Refresh::Policy,
            &NoAuth,
        )
        .await;
        assert_eq!(
            pins.images[0].pinned.as_deref(),
            Some("sha256:aaa"),
            "{pins:?}"
        );
    }

    /// A refresh that gets no answer keeps what runs pinned: nothing is replaced by a by-tag
    /// container and "by tag" is not recorded over it.
    #[tokio::test]
    async fn a_refresh_without_an_answer_keeps_the_running_digest() {
        let reg = FakeRegistry::new();
        reg.set_unreachable("reg.example:5000", true);
        let n1 = node_with(&reg, &[]);
        let runtimes: crate::execute::Runtimes =
            [("n1".to_string(), Arc::new(n1) as Arc<dyn NodeRuntime>)].into();
        let f = fleet_with(&[("a", "reg.example:5000/a:1")]);
        let running = BTreeMap::from([(
            "reg.example:5000/a:1".to_string(),
            Running {
                digests: BTreeMap::from([("sha256:aaa".to_string(), 1)]),
                by_tag: false,
            },
        )]);
        let pins = resolve(
            &f,
            &runtimes,
            &["n1"],
            &BTreeMap::new(),
            &running,
            Refresh::All,
            &NoAuth,
        )
        .await;
        let pin = &pins.images[0];
        assert!(pin.error.is_some(), "{pin:?}");
        assert_eq!(pin.pinned.as_deref(), Some("sha256:aaa"));
        assert_eq!(pin.record.as_deref(), Some("sha256:aaa"));
    }

    /// An image shared by services with different policies is pinned by the strongest, and
    /// `fleet` images are never pinned (a copy carries no registry digest).
    #[tokio::test]
    async fn a_shared_image_is_pinned_by_its_strongest_policy_and_fleet_never() {
        let mut f = fleet_with(&[("a", "reg.example:5000/a:1"), ("b", "reg.example:5000/a:1")]);
        f.services.get_mut("a").unwrap().pull = PullPolicy::Never;
        f.services.get_mut("b").unwrap().pull = PullPolicy::Always;
        assert_eq!(f.images()["reg.example:5000/a:1"], PullPolicy::Always);
        f.services.get_mut("a").unwrap().pull = PullPolicy::Fleet;
        assert_eq!(f.images()["reg.example:5000/a:1"], PullPolicy::Fleet);
        let reg = FakeRegistry::new();
        reg.push("reg.example:5000/a:1", "sha256:aaa");
        let n1 = node_with(&reg, &[]);
        let runtimes: crate::execute::Runtimes =
            [("n1".to_string(), Arc::new(n1) as Arc<dyn NodeRuntime>)].into();
        let pins = resolve(
            &f,
            &runtimes,
            &["n1"],
            &BTreeMap::new(),
            &BTreeMap::new(),
            Refresh::All,
            &NoAuth,
        )
        .await;
        assert!(pins.images.is_empty(), "{pins:?}");
    }
}
