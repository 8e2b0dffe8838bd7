"""paychaos: resilience and chaos testing for mobile-payment backends."""


def discover(discover_system: bool = True) -> dict:  # type: ignore[type-arg]
    """Chaos Toolkit's entry point: `chaos discover paychaos` imports this package and calls it."""
    from paychaos.ctk import discover as discover_extension

    return discover_extension(discover_system)
