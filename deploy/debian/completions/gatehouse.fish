# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_gatehouse_global_optspecs
    string join \n h/help V/version
end

function __fish_gatehouse_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_gatehouse_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_gatehouse_using_subcommand
    set -l cmd (__fish_gatehouse_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c gatehouse -n "__fish_gatehouse_needs_command" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -s V -l version -d 'Print version'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "run" -d 'Run the gateway with a config file (or a config held in etcd)'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "check" -d 'Validate config files: exit 0, or print every error and exit 1'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "demo" -d 'Run the embedded demo: built-in backends and a demo config (the default command)'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "ctl" -d 'Drive a running gateway through its admin API (token from GATEHOUSE_ADMIN_TOKEN)'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "schema" -d 'Print the config file\'s JSON Schema (for editors and validators; docs/config.md)'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "hash-key" -d 'Print the `sha256:...` digest of an API key, for a consumer\'s `api_keys`'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "demo-backend" -d 'Run one demo backend that answers with its name'
complete -c gatehouse -n "__fish_gatehouse_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -s c -l config -d 'The YAML config file' -r -F
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -l config-etcd -d 'Instead of a file: etcd client URLs (http://HOST:2379, comma-separated) whose key `--config-key` holds the whole config, watched' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -l config-key -d 'The etcd key holding the config' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -l worker-threads -d 'Worker threads (default: one per core). 1 runs everything on one thread' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -l upgrade-socket -d 'Offer the listening sockets on this unix socket (mode 0600) to a new process started with --upgrade-from, then drain and exit 0 once it serves' -r -F
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -l upgrade-from -d 'Take the listening sockets and endpoint state over from the gateway offering them on this unix socket, then tell it to drain' -r -F
complete -c gatehouse -n "__fish_gatehouse_using_subcommand run" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand check" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo" -l listen -d 'Where the gateway listens' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo" -l admin -d 'Where the admin API listens' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo" -l print-config -d 'Print the demo config and exit'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -l admin -d 'The admin listener, host:port' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "status" -d 'Version, uptime and config generation'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "clusters" -d 'Every cluster\'s endpoints (or one cluster\'s): health, breaker, drain, weight, load'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "drain" -d 'Stop sending new requests to an endpoint'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "enable" -d 'Undo a drain'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "breaker" -d 'Open (a drill) or close an endpoint\'s circuit breaker'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "reload" -d 'Reload the config file now'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "health" -d 'Exit 0 when the admin listener answers GET /healthz with ok, 1 otherwise (a container HEALTHCHECK: the image has no curl)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "events" -d 'Print state changes as they happen, until interrupted'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and not __fish_seen_subcommand_from status clusters drain enable breaker reload health events help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from status" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from clusters" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from clusters" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from drain" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from drain" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from enable" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from breaker" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from breaker" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from reload" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from reload" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from health" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from health" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from events" -s f -l follow -d 'Keep following (the default; accepted for clarity)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from events" -l json -d 'Print the API\'s JSON instead of a table'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from events" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "status" -d 'Version, uptime and config generation'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "clusters" -d 'Every cluster\'s endpoints (or one cluster\'s): health, breaker, drain, weight, load'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "drain" -d 'Stop sending new requests to an endpoint'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Undo a drain'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "breaker" -d 'Open (a drill) or close an endpoint\'s circuit breaker'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "reload" -d 'Reload the config file now'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "health" -d 'Exit 0 when the admin listener answers GET /healthz with ok, 1 otherwise (a container HEALTHCHECK: the image has no curl)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "events" -d 'Print state changes as they happen, until interrupted'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand completions" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand man" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand schema" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand hash-key" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo-backend" -l listen -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo-backend" -l name -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo-backend" -l fail-rate -d 'Share of requests answered with 500 (0.0–1.0)' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo-backend" -l latency -d 'Added latency per response, like 20ms' -r
complete -c gatehouse -n "__fish_gatehouse_using_subcommand demo-backend" -s h -l help -d 'Print help'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "run" -d 'Run the gateway with a config file (or a config held in etcd)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "check" -d 'Validate config files: exit 0, or print every error and exit 1'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "demo" -d 'Run the embedded demo: built-in backends and a demo config (the default command)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "ctl" -d 'Drive a running gateway through its admin API (token from GATEHOUSE_ADMIN_TOKEN)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "man" -d 'Print the man page (roff)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "schema" -d 'Print the config file\'s JSON Schema (for editors and validators; docs/config.md)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "hash-key" -d 'Print the `sha256:...` digest of an API key, for a consumer\'s `api_keys`'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "demo-backend" -d 'Run one demo backend that answers with its name'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and not __fish_seen_subcommand_from run check demo ctl completions man schema hash-key demo-backend help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "status" -d 'Version, uptime and config generation'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "clusters" -d 'Every cluster\'s endpoints (or one cluster\'s): health, breaker, drain, weight, load'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "drain" -d 'Stop sending new requests to an endpoint'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "enable" -d 'Undo a drain'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "breaker" -d 'Open (a drill) or close an endpoint\'s circuit breaker'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "reload" -d 'Reload the config file now'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "health" -d 'Exit 0 when the admin listener answers GET /healthz with ok, 1 otherwise (a container HEALTHCHECK: the image has no curl)'
complete -c gatehouse -n "__fish_gatehouse_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "events" -d 'Print state changes as they happen, until interrupted'
