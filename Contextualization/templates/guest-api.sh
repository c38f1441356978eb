#!/bin/sh
# Example user-data for the test appliance: serve a greeting from the guest's API (port 80, forwarded by
# vmsessiond to the session's apiURL). Start a session with it and {"parameters": {"name": "Ada"}}.
cat > /www/index.html <<HTML
<h1>Hello, ${name:world}</h1>
<p>Session ${session_note:started by vmsessiond}</p>
HTML
