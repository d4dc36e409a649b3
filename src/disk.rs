//! Disk use of a node and which images a prune removes (SPEC §11).
//!
//! A node's disk is the filesystem of its engine's data root (`DockerRootDir`): `df` of that
//! path tells how full it is, the engine's `system df` what it stores there (images,
//! containers' layers, volumes, build cache). [`measure`] asks both; everything else here is a
//! pure decision over what it returned:
//!
//! - [`NodeDisk::used_hundredths`]: how full the node is — the filesystem's share when `df`
//!   answered, else what the engine stores over the node's declared `capacity.disk`, else
//!   unknown (and nothing is pruned);
//! - [`Keep::of`]: the images the applied manifests name (by tag and by the digest the fleet
//!   runs), which are never removed, even when no container uses them yet;
//! - [`prune_plan`]: the images to remove from a node above the watermark — those no container
//!   uses (any container: the fleet's, another fleet's, the operator's own) and [`Keep`] does
//!   not hold, oldest first, until the estimate falls under the watermark.
//!
//! The controller acts on the plan ([`crate::controller`]); the engine refuses to remove an
//! image a container uses, so a container created between the measurement and the removal
//! keeps its image.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::container::{EngineDisk, Filesystem, ImageUsage, pinned};
use crate::manifest::quantity::Percent;
use crate::manifest::spec::DesiredFleet;
use crate::transport::{NodeRuntime, TransportError};

/// What one node's disk holds, as [`measure`] found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeDisk {
    /// The engine's data root, e.g. `/var/lib/docker`.
    pub data_root: String,
    /// Its filesystem, when `df` answered.
    pub filesystem: Option<Filesystem>,
    /// Why `df` did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem_error: Option<String>,
    /// What the engine stores.
    pub engine: EngineDisk,
    /// The node's declared `capacity.disk`, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<u64>,
}

impl NodeDisk {
    /// Share of the disk in use, in hundredths of a percent: the data root filesystem's (as `df`
    /// shows it) when measured; else what the engine stores over the declared capacity; else
    /// `None`.
    pub fn used_hundredths(&self) -> Option<u32> {
        if let Some(fs) = &self.filesystem {
            return Some(fs.used_hundredths());
        }
        let declared = self.declared.filter(|d| *d > 0)?;
        Some(
            (u128::from(self.engine.total()) * 10_000)
                .div_ceil(u128::from(declared))
                .min(10_000) as u32,
        )
    }

    /// The share in use once `freed` more bytes are free, as [`Self::used_hundredths`].
    fn used_after(&self, freed: u64) -> Option<u32> {
        let mut after = self.clone();
        match after.filesystem.as_mut() {
            Some(fs) => {
                fs.used = fs.used.saturating_sub(freed);
                fs.available = fs.available.saturating_add(freed);
            }
            None => after.engine.images_bytes = after.engine.images_bytes.saturating_sub(freed),
        }
        after.used_hundredths()
    }

    /// Size of the disk the share is of: the filesystem's, else the declared capacity.
    pub fn size(&self) -> Option<u64> {
        self.filesystem.map(|f| f.size).or(self.declared)
    }

    /// Bytes in use on that disk: the filesystem's, else what the engine stores.
    pub fn used(&self) -> Option<u64> {
        match (&self.filesystem, self.declared) {
            (Some(f), _) => Some(f.used),
            (None, Some(_)) => Some(self.engine.total()),
            (None, None) => None,
        }
    }
}

/// Measures `rt`'s disk: the engine's data root and `system df`, then `df` of the data root.
/// `declared` is the node's `capacity.disk`.
///
/// # Errors
/// The engine did not answer `/info` or `system df`. A `df` that fails (an SSH account that
/// may not run commands) is not an error: [`NodeDisk::filesystem_error`] says why.
pub async fn measure(
    rt: &dyn NodeRuntime,
    declared: Option<u64>,
) -> Result<NodeDisk, TransportError> {
    let info = rt.engine_info().await?;
    let engine = rt.disk_usage().await?;
    let data_root = if info.docker_root_dir.is_empty() {
        "/var/lib/docker".to_string()
    } else {
        info.docker_root_dir
    };
    let (filesystem, filesystem_error) = match rt.filesystem(&data_root).await {
        Ok(fs) => (Some(fs), None),
        Err(e) => (None, Some(e.message.clone())),
    };
    Ok(NodeDisk {
        data_root,
        filesystem,
        filesystem_error,
        engine,
        declared,
    })
}

/// The image names a prune never removes: every image the applied manifests name, by its tag
/// and by the digest the fleet runs it at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    names: BTreeSet<String>,
}

impl Keep {
    /// The images of every service and plug class of `desired`, with their pinned digests
    /// ([`DesiredFleet::image_digests`]).
    pub fn of(desired: &DesiredFleet) -> Keep {
        let mut names = BTreeSet::new();
        for image in desired.images().keys() {
            names.insert(familiar(image));
            if let Some(digest) = desired.image_digests.get(*image).filter(|d| !d.is_empty()) {
                names.insert(familiar(&pinned(image, digest)));
            }
        }
        Keep { names }
    }

    /// Whether any name of `image` (tag or digest) is kept.
    pub fn keeps(&self, image: &ImageUsage) -> bool {
        image
            .tags
            .iter()
            .chain(&image.digests)
            .any(|n| self.names.contains(&familiar(n)))
    }
}

/// `reference` as the engine lists it: Docker Hub's host and `library/` dropped, `:latest`
/// added to a name with neither tag nor digest (`docker.io/library/redis` → `redis:latest`).
pub fn familiar(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let name = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|h| name.strip_prefix(h))
        .map_or(name, |rest| rest.strip_prefix("library/").unwrap_or(rest));
    match digest {
        Some(d) => format!("{name}@{d}"),
        None => {
            let last = name.rsplit('/').next().unwrap_or(name);
            if last.contains(':') {
                name.to_string()
            } else {
                format!("{name}:latest")
            }
        }
    }
}

/// One image a prune removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The image.
    pub image: ImageUsage,
    /// What to ask the engine to remove, in order: each tag (the last one removes the image),
    /// or the id of an image without tags.
    pub names: Vec<String>,
}

impl Removal {
    /// How the image is named in events: its first tag, else its short id.
    pub fn label(&self) -> String {
        self.image
            .tags
            .first()
            .cloned()
            .unwrap_or_else(|| short_id(&self.image.id))
    }

    /// Bytes its removal frees (what it does not share with other images).
    pub fn bytes(&self) -> u64 {
        self.image.size.saturating_sub(self.image.shared_size)
    }
}

/// `sha256:0123456789ab…` → `sha256:0123456789ab`.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// What to remove from a node whose disk is `disk` when `watermark` is its limit: nothing when
/// it is at or under the watermark (or its use is unknown); else the images that no container
/// uses and `keep` does not hold, oldest first, until the estimated use (each removal frees
/// its unshared bytes) is under the watermark or none is left.
pub fn prune_plan(disk: &NodeDisk, watermark: Percent, keep: &Keep) -> Vec<Removal> {
    let Some(used) = disk.used_hundredths() else {
        return Vec::new();
    };
    if used <= watermark.0 {
        return Vec::new();
    }
    let mut candidates: Vec<&ImageUsage> = disk
        .engine
        .images
        .iter()
        .filter(|i| i.containers == 0 && !keep.keeps(i))
        .collect();
    candidates.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let mut out = Vec::new();
    let mut freed = 0u64;
    for image in candidates {
        if disk.used_after(freed).is_some_and(|u| u <= watermark.0) {
            break;
        }
        let names = if image.tags.is_empty() {
            vec![image.id.clone()]
        } else {
            image.tags.clone()
        };
        let removal = Removal {
            image: image.clone(),
            names,
        };
        freed = freed.saturating_add(removal.bytes());
        out.push(removal);
    }
    out
}

/// `hundredths` as a percentage for people: `83.4%`, `80%`.
pub fn percent_text(hundredths: u32) -> String {
    if hundredths.is_multiple_of(100) {
        format!("{}%", hundredths / 100)
    } else {
        format!("{:.1}%", f64::from(hundredths) / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn image(id: &str, tags: &[&str], size: u64, created: i64, containers: u64) -> ImageUsage {
        ImageUsage {
            id: format!("sha256:{id}"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digests: Vec::new(),
            size,
            shared_size: 0,
            created,
            containers,
        }
    }

    fn disk(used: u64, available: u64, images: Vec<ImageUsage>) -> NodeDisk {
        NodeDisk {
            data_root: "/var/lib/docker".into(),
            filesystem: Some(Filesystem {
                size: used + available,
                used,
                available,
            }),
            engine: EngineDisk {
                images,
                ..EngineDisk::default()
            },
            ..NodeDisk::default()
        }
    }

    fn keep(names: &[&str]) -> Keep {
        Keep {
            names: names.iter().map(|n| familiar(n)).collect(),
        }
    }

    fn removed(plan: &[Removal]) -> Vec<String> {
        plan.iter().map(Removal::label).collect()
    }

    #[test]
    fn under_the_watermark_nothing_is_removed() {
        let d = disk(70 * GIB, 30 * GIB, vec![image("a", &["old:1"], GIB, 1, 0)]);
        assert!(prune_plan(&d, Percent(8000), &Keep::default()).is_empty());
    }

    #[test]
    fn used_images_and_kept_images_stay_and_the_oldest_unused_go_first() {
        let d = disk(
            85 * GIB,
            15 * GIB,
            vec![
                image("run", &["app:2"], 2 * GIB, 1, 1),
                image("kept", &["redis:7"], 2 * GIB, 2, 0),
                image("new", &["app:1"], 2 * GIB, 30, 0),
                image("old", &["tool:0"], 2 * GIB, 10, 0),
                image("foreign", &["mine:dev"], 2 * GIB, 3, 1),
            ],
        );
        let plan = prune_plan(&d, Percent(8000), &keep(&["docker.io/library/redis:7"]));
        // 85% → 83% → 81% → (none left that may go)
        assert_eq!(removed(&plan), ["tool:0", "app:1"]);
    }

    #[test]
    fn removal_stops_once_the_estimate_is_under_the_watermark() {
        let d = disk(
            81 * GIB,
            19 * GIB,
            vec![
                image("a", &["a:1"], 2 * GIB, 1, 0),
                image("b", &["b:1"], 2 * GIB, 2, 0),
            ],
        );
        assert_eq!(
            removed(&prune_plan(&d, Percent(8000), &Keep::default())),
            ["a:1"]
        );
    }

    #[test]
    fn a_kept_digest_keeps_an_untagged_image_and_an_untagged_one_goes_by_id() {
        let mut pinned_only = image("pin", &[], GIB, 1, 0);
        pinned_only.digests = vec!["reg.example/app@sha256:aaa".into()];
        let dangling = image("0123456789abcdef", &[], GIB, 2, 0);
        let d = disk(99 * GIB, GIB, vec![pinned_only, dangling]);
        let plan = prune_plan(&d, Percent(5000), &keep(&["reg.example/app@sha256:aaa"]));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].names, ["sha256:0123456789abcdef"]);
        assert_eq!(plan[0].label(), "sha256:0123456789ab");
    }

    #[test]
    fn every_tag_of_an_image_is_removed_and_one_kept_tag_keeps_it_whole() {
        let d = disk(
            99 * GIB,
            GIB,
            vec![
                image("two", &["x:1", "x:latest"], GIB, 1, 0),
                image("half", &["y:1", "y:2"], GIB, 2, 0),
            ],
        );
        let plan = prune_plan(&d, Percent(5000), &keep(&["y:2"]));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].names, ["x:1", "x:latest"]);
    }

    #[test]
    fn without_df_the_declared_capacity_is_the_disk_and_without_either_nothing_is_pruned() {
        let mut d = disk(0, 0, vec![image("a", &["a:1"], 9 * GIB, 1, 0)]);
        d.filesystem = None;
        d.engine.images_bytes = 9 * GIB;
        assert_eq!(d.used_hundredths(), None);
        assert!(prune_plan(&d, Percent(100), &Keep::default()).is_empty());
        d.declared = Some(10 * GIB);
        assert_eq!(d.used_hundredths(), Some(9000));
        assert_eq!(
            removed(&prune_plan(&d, Percent(8000), &Keep::default())),
            ["a:1"]
        );
    }

    #[test]
    fn familiar_names_match_the_engines_spelling() {
        assert_eq!(familiar("redis"), "redis:latest");
        assert_eq!(familiar("docker.io/library/redis:7"), "redis:7");
        assert_eq!(familiar("docker.io/bitnami/redis:7"), "bitnami/redis:7");
        assert_eq!(familiar("10.0.0.5:5000/app"), "10.0.0.5:5000/app:latest");
        assert_eq!(familiar("10.0.0.5:5000/app:2"), "10.0.0.5:5000/app:2");
        assert_eq!(
            familiar("docker.io/library/redis@sha256:abc"),
            "redis@sha256:abc"
        );
    }

    #[test]
    fn the_keep_set_holds_every_manifest_image_and_its_pinned_digest() {
        let text = "apiVersion: fleet/v1\nkind: Node\nmetadata: {name: n1}\nspec: {capacity: {cpus: 4, memory: 8GiB}}\n---\napiVersion: fleet/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: 'reg.example/web:2', resources: {memory: 16MiB}}\n";
        let mut fleet = crate::manifest::parse(&[crate::manifest::Source {
            name: "t.yaml".into(),
            text: text.into(),
        }])
        .unwrap()
        .fleet;
        fleet
            .image_digests
            .insert("reg.example/web:2".into(), "sha256:beef".into());
        let k = Keep::of(&fleet);
        let mut by_digest = image("x", &[], 1, 1, 0);
        by_digest.digests = vec!["reg.example/web@sha256:beef".into()];
        assert!(k.keeps(&by_digest));
        assert!(k.keeps(&image("y", &["reg.example/web:2"], 1, 1, 0)));
        assert!(!k.keeps(&image("z", &["reg.example/web:1"], 1, 1, 0)));
    }

    #[test]
    fn df_percent_rounds_up_like_df() {
        let fs = Filesystem {
            size: 1000,
            used: 801,
            available: 199,
        };
        assert_eq!(fs.used_hundredths(), 8010);
        assert_eq!(percent_text(8010), "80.1%");
        assert_eq!(percent_text(8000), "80%");
    }
}
