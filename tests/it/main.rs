mod cgroup_path;
mod cli;
mod delivery;
mod e2e;
mod node;
mod otlp;
mod otlp_clients;
mod support;
