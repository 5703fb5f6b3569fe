mod cgroup_path;
mod cli;
mod delivery;
mod e2e;
mod fakeapi;
mod k8s;
mod node;
mod support;
