#!/bin/sh
echo "hello from a file kiln fetched over HTTP"
