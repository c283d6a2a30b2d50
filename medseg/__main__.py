from medseg.cli.main import main

main()
