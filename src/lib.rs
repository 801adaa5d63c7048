//! provision: agentless provisioning of Docker Swarm clusters over SSH.

pub mod cli;
pub mod inventory;
pub mod lab;
pub mod sys;
pub mod transport;
pub mod yaml;
