mod delivery;
mod support;
