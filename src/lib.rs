//! provision: agentless provisioning of Docker Swarm clusters over SSH.

pub mod cli;
pub mod hardening;
pub mod inventory;
pub mod lab;
pub mod modules;
pub mod output;
pub mod play;
pub mod run;
pub mod sys;
pub mod template;
pub mod transport;
pub mod yaml;
