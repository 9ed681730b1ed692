# NixOS module: services.fleet-ledger. Option names are documented in docs/OPERATIONS.md
# ("NixOS"); the hardening matches deploy/fleet-ledger.service.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.fleet-ledger;
  json = pkgs.formats.json { };
  # The config is rendered into the store: it holds file paths and token hashes, never a
  # secret (private keys stay in the files it names).
  fo = cfg.failover;
  # `failover` options rendered into the config's `failover` section (OPERATIONS, "Failover").
  failoverSettings = lib.optionalAttrs fo.enable {
    failover = {
      node = fo.node;
      role = fo.role;
      etcd = fo.etcd;
      prefix = fo.prefix;
      lease_ttl_secs = fo.leaseTtlSecs;
      peers = fo.peers;
      token_file = fo.tokenFile;
      strict_sync = fo.strictSync;
      min_sync = fo.minSync;
      ship_timeout_ms = fo.shipTimeoutMs;
    }
    // lib.optionalAttrs (fo.initialWriter != null) { initial_writer = fo.initialWriter; }
    // lib.optionalAttrs (fo.witnesses != [ ]) { witnesses = fo.witnesses; }
    // lib.optionalAttrs (fo.witnessesRequired != null) {
      witnesses_required = fo.witnessesRequired;
    };
  };
  configFile = json.generate "fleet-ledger.json" (cfg.settings // failoverSettings);
  port = lib.toInt (lib.last (lib.splitString ":" cfg.listen));
  exe = lib.getExe cfg.package;
in
{
  options.services.fleet-ledger = {
    enable = lib.mkEnableOption "fleet-ledger, the fleet control plane's signed event log";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The fleet-ledger package (the flake's module sets its own build).";
    };

    database = lib.mkOption {
      type = lib.types.str;
      default = "/var/lib/fleet-ledger/ledger.redb";
      description = "The ledger database file; it must be under /var/lib/fleet-ledger.";
    };

    listen = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0:8443";
      example = "[::]:8443";
      description = "Address and port the API listens on.";
    };

    settings = lib.mkOption {
      type = json.type;
      default = { };
      example = lib.literalExpression ''
        {
          signing_key = "/run/keys/fleet-ledger/cp.key";
          trust.manifest_keys = [ { algorithm = "ed25519"; public = "…"; } ];
          tokens = [ { sha256 = "…"; role = "operator"; name = "alice"; } ];
          publish = { to = "s3://fleet-tiles/prod"; interval_secs = 5; };
        }
      '';
      description = ''
        The daemon's config (docs/OPERATIONS.md, "Configuration"), rendered to JSON. Every
        path in it must be absolute (the file lives in the Nix store). Secrets are named by
        path, never inlined: `signing_key`, `tls.key`, `enrollment.ca_key` are files owned by
        the fleet-ledger user, mode 0600 or 0400; tokens appear only as SHA-256 hashes.
      '';
    };

    initOrigin = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "cp.example.org/fleet";
      description = ''
        If set and the database does not exist, it is created before the first start with
        this origin and `settings.signing_key` as the genesis key (`fleet-ledger init`).
      '';
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/keys/fleet-ledger/aws.env";
      description = ''
        An environment file read by the service: the AWS_* variables for publication to S3
        (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the listen port in the firewall.";
    };

    failover = {
      enable = lib.mkEnableOption ''
        failover: this node is one of several writer-capable nodes sharing one log through a
        commit register in etcd; the elected one writes, the others stand by (OPERATIONS,
        "Failover")
      '';
      node = lib.mkOption {
        type = lib.types.str;
        example = "cp-a";
        description = "This node's name, unique among the nodes (letters, digits, '-').";
      };
      role = lib.mkOption {
        type = lib.types.enum [
          "standby"
          "follower"
        ];
        default = "standby";
        description = "standby: writer-capable (campaigns, writes once elected); follower: a verifying read follower, which holds no signing key (leave settings.signing_key unset).";
      };
      etcd = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [
          "http://10.0.0.21:2379"
          "http://10.0.0.22:2379"
          "http://10.0.0.23:2379"
        ];
        description = "Every etcd member's client URL.";
      };
      prefix = lib.mkOption {
        type = lib.types.str;
        default = "/fleet-ledger";
        description = "The log's key prefix in etcd (one prefix per log).";
      };
      leaseTtlSecs = lib.mkOption {
        type = lib.types.int;
        default = 5;
        description = "The election lease: a writer that cannot renew it for this long loses the election.";
      };
      peers = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        example = {
          cp-b = "https://10.0.0.12:8443";
        };
        description = "The other writer-capable nodes: name to the base URL of their API.";
      };
      tokenFile = lib.mkOption {
        type = lib.types.str;
        example = "/run/keys/fleet-ledger/failover-peer.token";
        description = "A file holding the secret every node shares (at least 32 characters), readable by the fleet-ledger user.";
      };
      initialWriter = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "The node that may take an empty register: the node whose log the others were copied from.";
      };
      strictSync = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Refuse writes while fewer than minSync standbys hold every batch, instead of going on without them.";
      };
      minSync = lib.mkOption {
        type = lib.types.int;
        default = 1;
        description = "With strictSync: standbys that must hold every batch.";
      };
      shipTimeoutMs = lib.mkOption {
        type = lib.types.int;
        default = 2000;
        description = "How long the writer waits for a standby to take a batch before it goes on without it (degraded mode).";
      };
      witnesses = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "witness.example/w1+1a2b3c4d+BP..." ];
        description = "A follower's witness policy: the witnesses it trusts (verifier keys as witnesses publish them). With any, it follows only up to checkpoints they cosigned.";
      };
      witnessesRequired = lib.mkOption {
        type = lib.types.nullOr lib.types.int;
        default = null;
        description = "With witnesses: how many distinct ones must have cosigned (null: all of them).";
      };
    };

    logFormat = lib.mkOption {
      type = lib.types.enum [
        "text"
        "json"
      ];
      default = "text";
      description = "Log lines as text, or as JSON objects (RUST_LOG_FORMAT=json).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.hasPrefix "/var/lib/fleet-ledger/" cfg.database;
        message = "services.fleet-ledger.database must be under /var/lib/fleet-ledger (the only writable path).";
      }
      {
        assertion = cfg.initOrigin == null || cfg.settings ? signing_key;
        message = "services.fleet-ledger.initOrigin needs settings.signing_key.";
      }
      {
        assertion =
          !fo.enable || ((fo.role == "follower" || fo.etcd != [ ]) && lib.hasPrefix "/" fo.tokenFile);
        message = "services.fleet-ledger.failover needs an absolute tokenFile, and on a standby etcd (every member's URL).";
      }
    ];

    users.users.fleet-ledger = {
      isSystemUser = true;
      group = "fleet-ledger";
      home = "/var/lib/fleet-ledger";
      description = "fleet-ledger daemon";
    };
    users.groups.fleet-ledger = { };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];

    environment.systemPackages = [ cfg.package ];

    systemd.services.fleet-ledger = {
      description = "fleet-ledger: signed event log of the fleet control plane";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      # A new config is a new store path, hence a new ExecStart: a restart. (The daemon also
      # re-reads its config on `systemctl reload`, for an edited file.)
      restartTriggers = [ configFile ];
      environment = {
        RUST_LOG = lib.mkDefault "info";
      }
      // lib.optionalAttrs (cfg.logFormat == "json") { RUST_LOG_FORMAT = "json"; };

      preStart = lib.optionalString (cfg.initOrigin != null) ''
        if [ ! -e ${lib.escapeShellArg cfg.database} ]; then
          ${exe} init --db ${lib.escapeShellArg cfg.database} \
            --key ${lib.escapeShellArg cfg.settings.signing_key} \
            --origin ${lib.escapeShellArg cfg.initOrigin}
        fi
      '';

      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${exe} serve --db ${lib.escapeShellArg cfg.database} --listen ${cfg.listen} --config ${configFile}";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        KillSignal = "SIGTERM";
        TimeoutStopSec = 30;
        Restart = "on-failure";
        RestartSec = "2s";
        User = "fleet-ledger";
        Group = "fleet-ledger";
        StateDirectory = "fleet-ledger";
        StateDirectoryMode = "0700";
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
        LimitNOFILE = 65536;
        UMask = "0077";

        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadWritePaths = [ "/var/lib/fleet-ledger" ];
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        PrivateMounts = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged @mount @debug @cpu-emulation @obsolete @raw-io @reboot @swap @clock @module"
        ];
        SystemCallErrorNumber = "EPERM";
        DevicePolicy = "closed";
        KeyringMode = "private";
      };
    };
  };
}
