mod cli;
mod fakeapi;
mod k8s;
