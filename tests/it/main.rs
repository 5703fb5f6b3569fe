
mod cgroup_parse;
