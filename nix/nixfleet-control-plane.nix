# The drop-in for nixfleet's control plane: services.nixfleet-control-plane, with nixfleet
# v0.2's option names and types (NIXFLEET-WIRE.md §11.1), mapped onto services.fleet-ledger.
# Import it with nix/module.nix in place of nixfleet's _control-plane.nix; docs/OPERATIONS.md
# ("Switching from nixfleet's control plane") says what maps to what and what to add (the
# ledger's signing key and database, the operators' tokens), which nixfleet has no option for.
#
# Like nixfleet's module, it writes /etc/nixfleet/cp/trust.json from `nixfleet.trust` when
# that option exists (nixfleet's contracts module, or nix/nixfleet-trust.nix).
{
  config,
  lib,
  options,
  pkgs,
  ...
}:

let
  cfg = config.services.nixfleet-control-plane;
  inherit (lib) mkOption types;
  nullOrStr =
    description:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      inherit description;
    };
  # A source group (nixfleet passes the URL pair only when both are set, and the token of
  # the group, or else the channel-refs token).
  source = name: {
    artifactUrl = nullOrStr "URL of CI's signed ${name}.";
    signatureUrl = nullOrStr "URL of its signature.";
    tokenFile = nullOrStr "File holding a bearer token for both URLs.";
  };
  both = s: s.artifactUrl != null && s.signatureUrl != null;
  tokenOf =
    s:
    if s.tokenFile != null then s.tokenFile else cfg.channelRefsSource.tokenFile;
  signedFile =
    s:
    {
      url = s.artifactUrl;
      signature_url = s.signatureUrl;
      interval_secs = 60;
    }
    // lib.optionalAttrs (tokenOf s != null) { bearer_token_file = tokenOf s; };
  nonNull = lib.filterAttrs (_: v: v != null);
  hasTrust = lib.hasAttrByPath [
    "nixfleet"
    "trust"
  ] options;
  trust = config.nixfleet.trust;
  # nixfleet's _trust-json.nix: CI's key slot as is, org root keys wrapped as ed25519.
  wrap =
    k:
    if k == null then
      null
    else
      {
        algorithm = "ed25519";
        public = k;
      };
  trustJson = {
    schemaVersion = 1;
    ciReleaseKey = trust.ciReleaseKey;
    cacheKeys = trust.cacheKeys;
    orgRootKey = {
      current = wrap trust.orgRootKey.current;
      previous = wrap trust.orgRootKey.previous;
      successor = wrap (trust.orgRootKey.successor or null);
      rejectBefore = trust.orgRootKey.rejectBefore;
      retireAt = trust.orgRootKey.retireAt or null;
    };
  };
  artifactDefault = "/var/lib/nixfleet-cp/fleet/releases/fleet.resolved.json";
in
{
  options.services.nixfleet-control-plane = {
    enable = lib.mkEnableOption "the fleet control plane (served by fleet-ledger)";
    package = mkOption {
      type = types.nullOr types.package;
      default = null;
      description = "The control plane's package: fleet-ledger's (null: services.fleet-ledger.package).";
    };
    listen = mkOption {
      type = types.str;
      default = "0.0.0.0:8080";
      description = "Address and port (`--listen`).";
    };
    tls = {
      cert = nullOrStr "The server certificate (PEM).";
      key = nullOrStr "Its private key (PEM).";
      clientCa = nullOrStr "The CA agents' and operators' client certificates chain to.";
    };
    artifactPath = mkOption {
      type = types.str;
      default = artifactDefault;
      description = "CI's fleet.resolved.json; its directory is the release directory fleet-ledger watches.";
    };
    signaturePath = mkOption {
      type = types.str;
      default = artifactDefault + ".sig";
      description = "Its signature: fleet-ledger reads it beside the artifact (`<artifactPath>.sig`).";
    };
    trustFile = mkOption {
      type = types.path;
      default = "/etc/nixfleet/cp/trust.json";
      description = "nixfleet's trust file (CI keys, org root keys).";
    };
    observedPath = mkOption {
      type = types.str;
      default = "/var/lib/nixfleet-cp/observed.json";
      description = "Accepted and unused: nixfleet's dev fallback; the ledger is the state.";
    };
    freshnessWindowMinutes = mkOption {
      type = types.ints.positive;
      default = 43200;
      description = "How old a signed CI file may be, in minutes.";
    };
    confirmDeadlineSecs = mkOption {
      type = types.ints.positive;
      default = 360;
      description = "Accepted and unused (nixfleet v0.2's serve uses it for nothing).";
    };
    agentCnSuffix = mkOption {
      type = types.str;
      description = "Agents' certificates are CN agent-<host>.<suffix>.";
    };
    agentCertValiditySecs = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      description = "Validity of issued agent certificates (at least 60; default 30 days).";
    };
    strict = mkOption {
      type = types.bool;
      default = false;
      description = "Refuse to start without every security setting; require X-Nixfleet-Protocol.";
    };
    fleetCaCert = nullOrStr "The fleet CA's certificate (enrollment and renewal).";
    fleetCaKey = nullOrStr "The fleet CA's private key file.";
    tpmCaPubkeyRaw = nullOrStr "The CA's P-256 public key, 64 raw bytes X‖Y (with tpmCaSignWrapper).";
    tpmCaSignWrapper = nullOrStr "Program that signs a certificate with the TPM-held CA key.";
    allowFileCaKey = mkOption {
      type = types.bool;
      default = false;
      description = "Let strict start with fleetCaKey on disk.";
    };
    auditLogPath = mkOption {
      type = types.str;
      default = "/var/lib/nixfleet-cp/issuance.log";
      description = "Accepted and unused: every issuance is a ledger entry.";
    };
    dbPath = mkOption {
      type = types.nullOr types.str;
      default = "/var/lib/nixfleet-cp/state.db";
      description = "Accepted and unused: the ledger is services.fleet-ledger.database.";
    };
    closureUpstream = nullOrStr "Binary cache the closure proxy fetches narinfo from.";
    rolloutsDir = nullOrStr "Accepted and unused: recorded rollout manifests are served from the ledger.";
    channelRefsSource = source "fleet.resolved.json";
    revocationsSource = source "revocations.json";
    bootstrapNoncesSource = source "bootstrap-nonces.json";
    rolloutsSource = {
      artifactUrlTemplate = nullOrStr "URL of a rollout manifest, {rolloutId} substituted.";
      signatureUrlTemplate = nullOrStr "URL of its signature.";
      tokenFile = nullOrStr "File holding a bearer token (default: channelRefsSource's).";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the listen port in the firewall.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.signaturePath == cfg.artifactPath + ".sig";
        message = "services.nixfleet-control-plane.signaturePath must be <artifactPath>.sig: fleet-ledger reads CI's release directory as CI writes it.";
      }
      {
        assertion = (cfg.tls.cert == null) == (cfg.tls.key == null);
        message = "services.nixfleet-control-plane.tls.cert and tls.key go together.";
      }
      {
        assertion = (cfg.tpmCaPubkeyRaw == null) == (cfg.tpmCaSignWrapper == null);
        message = "services.nixfleet-control-plane.tpmCaPubkeyRaw and tpmCaSignWrapper go together.";
      }
    ];
    warnings = lib.optional (
      !cfg.strict
      && !(
        lib.hasPrefix "127." cfg.listen
        || lib.hasPrefix "localhost:" cfg.listen
        || lib.hasPrefix "[::1]:" cfg.listen
      )
    ) "services.nixfleet-control-plane: strict = false on a non-loopback listen address.";

    environment.etc = lib.optionalAttrs hasTrust {
      "nixfleet/cp/trust.json".source = pkgs.writers.writeJSON "trust.json" trustJson;
    };

    services.fleet-ledger = {
      enable = true;
      listen = cfg.listen;
      openFirewall = cfg.openFirewall;
      settings = nonNull {
        manifest_dir = dirOf cfg.artifactPath;
        strict = cfg.strict;
        closure_upstream = cfg.closureUpstream;
        trust = {
          trust_file = cfg.trustFile;
          max_age_secs = cfg.freshnessWindowMinutes * 60;
        };
        tls =
          if cfg.tls.cert == null then
            null
          else
            nonNull {
              cert = cfg.tls.cert;
              key = cfg.tls.key;
              client_ca = cfg.tls.clientCa;
              agent_cn_suffix = cfg.agentCnSuffix;
            };
        enrollment =
          if cfg.fleetCaCert == null then
            null
          else
            nonNull {
              ca_cert = cfg.fleetCaCert;
              ca_key = cfg.fleetCaKey;
              tpm_ca_pubkey_raw = cfg.tpmCaPubkeyRaw;
              tpm_ca_sign_wrapper = cfg.tpmCaSignWrapper;
              allow_file_ca_key = cfg.allowFileCaKey;
              cert_validity_secs = cfg.agentCertValiditySecs;
            };
        pull =
          if both cfg.channelRefsSource && cfg.rolloutsSource.artifactUrlTemplate != null then
            nonNull {
              fleet_url = cfg.channelRefsSource.artifactUrl;
              fleet_signature_url = cfg.channelRefsSource.signatureUrl;
              rollout_url_template = cfg.rolloutsSource.artifactUrlTemplate;
              rollout_signature_url_template = cfg.rolloutsSource.signatureUrlTemplate;
              bearer_token_file = tokenOf cfg.rolloutsSource;
            }
          else
            null;
        revocations = if both cfg.revocationsSource then signedFile cfg.revocationsSource else null;
        bootstrap_nonces =
          if both cfg.bootstrapNoncesSource then signedFile cfg.bootstrapNoncesSource else null;
      };
    }
    // lib.optionalAttrs (cfg.package != null) { package = cfg.package; };

    systemd.services.fleet-ledger.serviceConfig = lib.optionalAttrs (cfg.tpmCaSignWrapper != null) {
      # As nixfleet's unit: the wrapper reaches the TPM.
      PrivateDevices = lib.mkForce false;
      DeviceAllow = [ "/dev/tpmrm0 rw" ];
      SupplementaryGroups = [ "tss" ];
    };
  };
}
