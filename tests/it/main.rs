mod diffing;
mod distribution;
mod helpers;
mod publishing;
mod subscriptions;
