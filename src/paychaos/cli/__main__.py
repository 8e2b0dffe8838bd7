from paychaos.cli.app import main

main()
