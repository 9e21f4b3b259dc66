// Package docker runs Velo components as hardened Docker containers.
//
// It owns, on one worker, the images it builds (tagged velo/<component>:<digest>)
// and the containers it starts, all labelled run.velo.* with the worker's name
// as owner. It builds images through the Engine API from the component's
// Dockerfile, starts containers with every privilege dropped, proxies requests
// to them over keep-alive connections (one pool per container run, so that
// stopping one container closes only its own), and scales each deployment
// between scale.min and scale.max: idle containers are paused, then stopped,
// and the next request wakes or starts one again.
//
// It must never touch a container or image that does not carry its labels and
// its owner, and never pull an image itself (a Dockerfile's FROM may).
package docker
