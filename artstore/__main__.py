from artstore.cli import main

main()
