#!/bin/bash
# The image's HEALTHCHECK: exit 0 when the server's GET /health answers 200 (model loaded, not
# draining), 1 otherwise. The runtime image has no curl or wget, so the request goes through
# bash's /dev/tcp. It asks on 127.0.0.1, which the default HOST (0.0.0.0, or `::` dual-stack)
# includes, and on $PORT like the server.
exec 3<>"/dev/tcp/127.0.0.1/${PORT:-8101}" || exit 1
printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
read -r -t 5 _ status _ <&3 || exit 1
[ "$status" = 200 ]
