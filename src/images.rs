//! Getting a container's image onto a node (SPEC §11): the pull policy decides whether the node
//! asks its registry, an [`AuthSource`] gives the credentials that travel with the pull, and a
//! failure becomes one [`ImageError`] naming node, image, registry and cause.
//!
//! Credentials are handed to the transport per call and dropped after it: nothing here stores,
//! logs or prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

/// The credentials of one apply or controller pass ([`Credentials`]), or why they could not be
/// loaded (a registry's password file or variable missing), said for each image that needs
/// them.
#[derive(Debug, Clone)]
pub struct FleetAuth(Result<Arc<Credentials>, String>);

#[async_trait::async_trait]
impl AuthSource for FleetAuth {
    async fn auth_for(&self, image: &str) -> Result<Option<RegistryAuth>, String> {
        let credentials = self.0.clone()?;
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
    let dir = crate::registry::docker_config_dir(&crate::registry::process_env);
    Arc::new(FleetAuth(
        Credentials::load(&fleet.fleet.registries, dir)
            .map(Arc::new)
            .map_err(|e| e.to_string()),
    ))
}

/// What making an image present did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// The node already held it.
    Present,
    /// It was pulled.
    Pulled,
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
}

impl ImageError {
    fn pull(node: &str, image: &str, e: TransportError) -> ImageError {
        let registry = match e.kind {
            ErrorKind::Registry(cause) => Some((
                cause,
                crate::transport::docker::registry_host(image).to_string(),
            )),
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
/// # Errors
/// [`ImageError`]: the node lacks the image and may not or could not pull it.
pub async fn make_present(
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
    async fn missing_pulls_only_what_the_node_lacks_and_never_pulls_nothing() {
        let reg = FakeRegistry::new();
        reg.push(IMG, "sha256:aaa");
        let rt = node_with(&reg, &["local:1"]);
        let quiet = |_| {};
        assert_eq!(
            make_present(&rt, "local:1", PullPolicy::Missing, &NoAuth, &quiet).await,
            Ok(Made::Present)
        );
        assert_eq!(
            make_present(&rt, IMG, PullPolicy::Missing, &NoAuth, &quiet).await,
            Ok(Made::Pulled)
        );
        // Pulled once: present from now on.
        assert_eq!(
            make_present(&rt, IMG, PullPolicy::Missing, &NoAuth, &quiet).await,
            Ok(Made::Present)
        );
        assert_eq!(
            make_present(&rt, "absent:1", PullPolicy::Never, &NoAuth, &quiet).await,
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
            make_present(&rt, IMG, PullPolicy::Always, &NoAuth, &quiet).await,
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
        let err = make_present(&rt, IMG, PullPolicy::Missing, &NoAuth, &quiet)
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
        let err = make_present(&rt, IMG, PullPolicy::Missing, &auth("wrong"), &quiet)
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("wrong"), "{err}");
        assert_eq!(
            make_present(&rt, IMG, PullPolicy::Missing, &auth("s3cret-pw"), &quiet).await,
            Ok(Made::Pulled)
        );
        let missing = "reg.example:5000/aims/api:404";
        let err = make_present(
            &rt,
            missing,
            PullPolicy::Missing,
            &auth("s3cret-pw"),
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
        let err = make_present(&rt, IMG, PullPolicy::Always, &auth("s3cret-pw"), &quiet)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("registry reg.example:5000: unreachable"),
            "{err}"
        );
    }

    #[test]
    fn debug_of_credentials_shows_no_password() {
        let shown = format!("{:?}", auth("s3cret-pw"));
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("deploy"), "{shown}");
    }
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

/// One image's digest in a pass: what was recorded, what its registry said now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePin {
    /// Image as the manifests name it.
    pub image: String,
    /// The digest recorded before this pass (`None`: never resolved; `""`: its registry could
    /// not be asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    /// What the registry answered now, when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// Why it could not be asked or answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The digest the fleet runs it as in this pass (`None`: by tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// The registry could not be reached (as opposed to refusing): a first lookup that fails
    /// so is recorded as "by tag" and not tried again until `--refresh`.
    #[serde(skip)]
    pub unreachable: bool,
}

impl ImagePin {
    /// Whether the registry now serves another digest than the one recorded.
    pub fn moved(&self) -> bool {
        matches!((&self.recorded, &self.resolved), (Some(r), Some(n)) if !r.is_empty() && r != n)
    }

    /// What to record after this pass: the new digest, `""` when the registry could not be
    /// reached and nothing was recorded, or nothing.
    pub fn to_record(&self) -> Option<&str> {
        match (&self.resolved, &self.recorded) {
            (Some(d), r) if r.as_deref() != Some(d.as_str()) => Some(d),
            (None, None) if self.unreachable => Some(""),
            _ => None,
        }
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

/// Pins each image of `fleet` to a digest: the recorded one, or — when `refresh` says so or
/// none is recorded — the one its registry serves now, asked through the engine of the first
/// of `nodes` (reachable nodes, in order) with the credentials of `auth`. Lookups run in
/// parallel; nothing is pulled or recorded.
pub async fn resolve(
    fleet: &DesiredFleet,
    runtimes: &crate::execute::Runtimes,
    nodes: &[&str],
    recorded: &BTreeMap<String, String>,
    refresh: Refresh,
    auth: &dyn AuthSource,
) -> ImagePins {
    let rt = nodes.iter().find_map(|n| runtimes.get(*n));
    let lookups = fleet
        .images()
        .into_iter()
        .filter(|(_, pull)| *pull != PullPolicy::Never)
        .map(|(image, pull)| async move {
            let recorded = recorded.get(image).cloned();
            let ask = match refresh {
                Refresh::All => true,
                Refresh::Policy => pull == PullPolicy::Always || recorded.is_none(),
                Refresh::Recorded => recorded.is_none(),
            };
            let mut pin = ImagePin {
                image: image.to_string(),
                pinned: recorded.clone().filter(|d| !d.is_empty()),
                recorded,
                resolved: None,
                error: None,
                unreachable: false,
            };
            let Some(rt) = rt.filter(|_| ask) else {
                return pin;
            };
            let answer = match auth.auth_for(image).await {
                Ok(a) => rt.resolve_digest(image, a.as_ref()).await.map_err(|e| {
                    pin.unreachable = !matches!(
                        e.kind,
                        ErrorKind::Registry(RegistryCause::NotFound | RegistryCause::Unauthorized)
                    );
                    e.to_string()
                }),
                Err(e) => Err(format!("image {image}: {e}")),
            };
            match answer {
                Ok(digest) => {
                    pin.pinned = Some(digest.clone());
                    pin.resolved = Some(digest);
                }
                Err(e) => pin.error = Some(e),
            }
            pin
        });
    ImagePins {
        images: futures_util::future::join_all(lookups).await,
    }
}
