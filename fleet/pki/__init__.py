"""A small PKI for mutual TLS: one CA per fleet, and certificates that carry identities.

Where to go for what:

- ``subjects``: the subject convention (``O=fleet, OU=<kind>, CN=<name>``), who a
  certificate names (``Identity``, ``Kind``, ``Role``) and its serial;
- ``issuing``: making a CA and the leaves it signs (key usages, SANs, validity), and
  which CA may sign which kind (etcd has a CA of its own);
- ``files``: a PKI directory on disk (``ca.crt``, ``<kind>-<name>.key``), its file
  modes, and the ``fleet certs`` command that makes a missing file again;
- ``local``: the PKIs ``fleet up`` makes, and renews near expiry;
- ``bundle``: what one machine of a pool needs, in a directory laid out as /etc/fleet;
- ``credentials``: a set of TLS files checked as a whole (key, issuer, dates);
- ``pem``: parsing PEM, and whether a key is a certificate's and a CA signed it.

This module imports nothing: the transport uses ``pem`` and the store imports the
transport, while ``subjects`` imports the store's name checks. Import the modules.
"""
