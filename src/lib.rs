//! provision: agentless provisioning of Docker Swarm clusters over SSH.

pub mod cli;
pub mod lab;
pub mod sys;
