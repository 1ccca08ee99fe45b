# DIB's own cache is per distribution, not per release; ours is per release and
# shared by every role, so turn DIB's off and mount ours instead.
export DIB_APT_LOCAL_CACHE=0
export DIB_APT_MINIMAL_CREATE_INTERFACES=0
if [ -n "${STACKSEED_DEB_CACHE:-}" ] && [ "${STACKSEED_OFFLINE:-0}" = "1" ]; then
    # Offline: the cache (indexed by build-images, mounted read-only by
    # root.d/50-stackseed-deb-cache) is the only repository, so nothing else is
    # contacted. apt uses file: packages in place, never copying them.
    export DIB_APT_SOURCES_CONF="stackseed-cache:deb [trusted=yes] file:/var/cache/stackseed-debs ./"
fi
