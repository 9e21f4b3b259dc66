// Package secrets seals and opens component secrets, checks their names and
// values, and redacts their values from the lines a component logs.
//
// Values are sealed with AES-256-GCM under a Keyring before they reach the
// store, bound to their component and name (the additional data), with the
// id of the sealing key stored beside each ciphertext. Deploymgr seals;
// workers open, right before handing the values to an instance as
// environment. Nothing here logs or stores a value: callers must not either.
package secrets
