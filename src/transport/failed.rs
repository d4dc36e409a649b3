//! A runtime for a node that could not even be set up (bad key file, bad address): every call
//! fails with the same error, so the node shows as unreachable with its cause.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use super::{ContainerUpdate, ErrorKind, ListFilter, NodeRuntime, TransportError};
use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineEvent, EngineInfo, JoinTokens,
    LocalImage, NetworkRecord, NetworkSpec, PullProgress, RegistryAuth, SwarmMember, SwarmRole,
};

/// Fails every call with the setup error.
pub struct FailedRuntime {
    node: String,
    kind: ErrorKind,
    message: String,
}

impl FailedRuntime {
    /// From the error that prevented setup.
    pub fn new(err: &TransportError) -> Self {
        FailedRuntime {
            node: err.node.clone(),
            kind: err.kind.clone(),
            message: err.to_string(),
        }
    }

    fn err(&self, op: &'static str) -> TransportError {
        TransportError::new(&self.node, op, self.kind.clone(), self.message.clone())
    }
}

#[async_trait]
impl NodeRuntime for FailedRuntime {
    fn node(&self) -> &str {
        &self.node
    }
    fn engine_kind(&self) -> Option<crate::container::EngineKind> {
        None
    }
    async fn engine_info(&self) -> Result<EngineInfo, TransportError> {
        Err(self.err("engine info"))
    }
    async fn list_containers(
        &self,
        _: &ListFilter,
    ) -> Result<Vec<ContainerRecord>, TransportError> {
        Err(self.err("list containers"))
    }
    async fn inspect_container(&self, _: &str) -> Result<ContainerDetails, TransportError> {
        Err(self.err("inspect container"))
    }
    async fn local_image(&self, _: &str) -> Result<Option<LocalImage>, TransportError> {
        Err(self.err("inspect image"))
    }
    async fn pull_image(
        &self,
        _: &str,
        _: Option<&RegistryAuth>,
        _: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), TransportError> {
        Err(self.err("pull image"))
    }
    async fn resolve_digest(
        &self,
        _: &str,
        _: Option<&RegistryAuth>,
    ) -> Result<String, TransportError> {
        Err(self.err("resolve image"))
    }
    async fn disk_usage(&self) -> Result<crate::container::EngineDisk, TransportError> {
        Err(self.err("system df"))
    }
    async fn filesystem(&self, _: &str) -> Result<crate::container::Filesystem, TransportError> {
        Err(self.err("df"))
    }
    async fn remove_image(&self, _: &str) -> Result<(), TransportError> {
        Err(self.err("remove image"))
    }
    async fn create_container(&self, _: &ContainerSpec) -> Result<String, TransportError> {
        Err(self.err("create container"))
    }
    async fn start_container(&self, _: &str) -> Result<(), TransportError> {
        Err(self.err("start container"))
    }
    async fn stop_container(&self, _: &str, _: Duration) -> Result<(), TransportError> {
        Err(self.err("stop container"))
    }
    async fn remove_container(&self, _: &str) -> Result<(), TransportError> {
        Err(self.err("remove container"))
    }
    async fn update_container(&self, _: &str, _: &ContainerUpdate) -> Result<(), TransportError> {
        Err(self.err("update container"))
    }
    async fn container_memory_usage(&self, _: &str) -> Result<u64, TransportError> {
        Err(self.err("container stats"))
    }
    async fn import_image(&self, _: &str, _: Vec<u8>) -> Result<(), TransportError> {
        Err(self.err("import image"))
    }
    async fn export_image(&self, _: &str) -> Result<super::ImageArchive, TransportError> {
        Err(self.err("export image"))
    }
    async fn load_image(
        &self,
        _: super::ImageArchive,
        _: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), TransportError> {
        Err(self.err("load image"))
    }
    async fn put_archive(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), TransportError> {
        Err(self.err("put archive"))
    }
    async fn get_archive(&self, _: &str, _: &str) -> Result<Vec<u8>, TransportError> {
        Err(self.err("get archive"))
    }
    async fn exec(
        &self,
        _: &str,
        _: &[String],
        _: super::ExecOptions,
    ) -> Result<super::ExecSession, TransportError> {
        Err(self.err("exec"))
    }
    async fn exec_resize(&self, _: &str, _: u16, _: u16) -> Result<(), TransportError> {
        Err(self.err("exec resize"))
    }
    async fn exec_exit_code(&self, _: &str) -> Result<Option<i64>, TransportError> {
        Err(self.err("exec inspect"))
    }
    async fn list_networks(&self, _: &ListFilter) -> Result<Vec<NetworkRecord>, TransportError> {
        Err(self.err("list networks"))
    }
    async fn inspect_network(&self, _: &str) -> Result<Option<NetworkRecord>, TransportError> {
        Err(self.err("inspect network"))
    }
    async fn create_network(&self, _: &NetworkSpec) -> Result<String, TransportError> {
        Err(self.err("create network"))
    }
    async fn remove_network(&self, _: &str) -> Result<(), TransportError> {
        Err(self.err("remove network"))
    }
    async fn swarm_init(
        &self,
        _: &str,
        _: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, TransportError> {
        Err(self.err("swarm init"))
    }
    async fn swarm_labels(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, TransportError> {
        Err(self.err("swarm inspect"))
    }
    async fn swarm_join_tokens(&self) -> Result<JoinTokens, TransportError> {
        Err(self.err("swarm inspect"))
    }
    async fn swarm_join(&self, _: &str, _: &str, _: &str) -> Result<(), TransportError> {
        Err(self.err("swarm join"))
    }
    async fn swarm_leave(&self, _: bool) -> Result<(), TransportError> {
        Err(self.err("swarm leave"))
    }
    async fn swarm_members(&self) -> Result<Vec<SwarmMember>, TransportError> {
        Err(self.err("list swarm nodes"))
    }
    async fn swarm_set_role(&self, _: &str, _: u64, _: SwarmRole) -> Result<(), TransportError> {
        Err(self.err("update swarm node"))
    }
    async fn swarm_remove_member(&self, _: &str) -> Result<(), TransportError> {
        Err(self.err("remove swarm node"))
    }
    async fn usage(&self, _: &str) -> Result<super::Usage, TransportError> {
        Err(self.err("container stats"))
    }
    async fn events(
        &self,
        _: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError> {
        Err(self.err("events"))
    }
    async fn logs(&self, _: &str, _: super::LogOptions) -> Result<super::LogLines, TransportError> {
        Err(self.err("container logs"))
    }
}
