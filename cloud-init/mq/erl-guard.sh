#!/bin/sh
# halab: installed by early.sh as /usr/lib/erlang/bin/erl, over the real script (dpkg-divert'ed to
# erl.distrib). RabbitMQ 3.10's epmd monitor starts a whole Erlang VM every 60 s
# ("erl -sname epmd-starter-N -noinput -s erlang halt") only to make sure epmd runs; RabbitMQ 3.12
# stopped doing that (rabbitmq-server#10457). On a TCG vCPU each of those VMs costs 10-60 s of CPU,
# so three idle mq nodes kept both host cores busy. When epmd already answers there is nothing to
# start. Every other use of erl runs the real script, sourced so that $0 and "$@" stay as they are.
case " $* " in
    *" -sname epmd-starter-"*)
        if /usr/bin/epmd -names >/dev/null 2>&1; then
            exit 0
        fi
        ;;
esac
. /usr/lib/erlang/bin/erl.distrib
